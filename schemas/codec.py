"""orjson codecs for the records, and the one error type bad input turns into.

``decode_event`` is total: for any bytes it returns an :class:`Event` or raises
:class:`InvalidRecord`, never anything else, so the worker can route every failure to the
dead-letter topic with a stage and a reason that names the field.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.records import Event

MAX_MESSAGE_BYTES = 64 * 1024
#: Where a message failed: its bytes, its fields, the user's stored sequence (an event the table
#: cannot hold), the model, or building its outputs. Each is a ``dlq.stage`` header value.
Stage = Literal["decode", "validate", "state", "score", "publish"]
R = TypeVar("R", bound=BaseModel)


class InvalidRecord(ValueError):
    """Input that cannot become a record; ``stage`` and ``field`` say where it failed."""

    def __init__(self, stage: Stage, reason: str, field: str | None = None) -> None:
        self.stage = stage
        self.field = field
        self.reason = reason
        super().__init__(f"{stage}: {field + ': ' if field else ''}{reason}")


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in err["loc"]) or None
    return field, err["msg"]


def decode_json(raw: bytes | bytearray | memoryview | str | None) -> dict[str, Any]:
    """Bytes to a JSON object, or ``InvalidRecord(stage='decode')``."""
    if raw is None:
        raise InvalidRecord("decode", "empty message (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidRecord("decode", f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord("decode", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidRecord("decode", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def validate(record_type: type[R], obj: dict[str, Any]) -> R:
    """A JSON object to a record, or ``InvalidRecord(stage='validate')`` naming the field."""
    try:
        return record_type.model_validate(obj)
    except ValidationError as exc:
        field, msg = _first_error(exc)
        raise InvalidRecord("validate", msg, field) from None
    except (ValueError, TypeError, OverflowError) as exc:  # defensive: validators' own errors
        raise InvalidRecord("validate", str(exc)) from None


def decode_event(raw: bytes | bytearray | memoryview | str | None) -> Event:
    """Bytes from the ``events`` topic to a valid :class:`Event`, or :class:`InvalidRecord`."""
    return validate(Event, decode_json(raw))


def decode(record_type: type[R], raw: bytes) -> R:
    """Bytes to any record type."""
    return validate(record_type, decode_json(raw))


def encode(record: BaseModel) -> bytes:
    """A record as compact JSON bytes (None fields dropped)."""
    return orjson.dumps(record.model_dump(mode="json", exclude_none=True))
