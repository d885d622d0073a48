"""The agents' topics hand each record's key and value bytes over as they are.

The agents decode (and dead-letter) records themselves, so Faust's serializers have nothing to
do. Declared as the ``raw`` codec, Faust still looked the codec up through the app's settings
twice a message: ~2 µs of the event loop's Faust floor of ~24 µs an event (an agent that only
acks, reading a 50,000-event backlog). This schema returns the bytes straight away.
"""

from __future__ import annotations

from typing import Any

import faust


class RawBytes(faust.Schema):
    """Key and value bytes, untouched; key and value types are ``bytes``."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes)

    def loads_key(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> Any:
        return message.key

    def loads_value(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> Any:
        return message.value
