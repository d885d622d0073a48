"""The per-user sequence state: a compact binary encoding and the windowing rules.

One table value per user holds their recent events in time order, bounded by a time window and
a length, plus when it was last updated (for the inactivity sweep). The encoding is a packed
struct, a fraction of the size of a JSON list, and the same bytes go to the changelog.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import NamedTuple

from models.vocab import EVENT_TYPES
from schemas.records import Event

FORMAT_VERSION = 1
_HEADER = struct.Struct("<BdH")  # version, updated_at, count
_EVENT = struct.Struct("<dBfBB")  # ts, type, price, len(event_id), len(item_id)
_TYPE_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}


class SeqEvent(NamedTuple):
    """What the model and the alert reasons need of one past event."""

    ts: float
    type: str
    event_id: str
    item_id: str | None
    price: float | None


@dataclass
class UserSequence:
    """A user's recent events, oldest first."""

    events: list[SeqEvent] = field(default_factory=list)
    updated_at: float = 0.0

    def insert(self, event: SeqEvent, window_seconds: float, max_length: int) -> bool:
        """Insert in time order (late events too); False when the event_id is already present.

        Afterwards only events within ``window_seconds`` of the newest and at most
        ``max_length`` of them remain.
        """
        if any(e.event_id == event.event_id for e in self.events):
            return False
        position = bisect_right([e.ts for e in self.events], event.ts)
        self.events.insert(position, event)
        horizon = self.events[-1].ts - window_seconds
        keep = [e for e in self.events if e.ts >= horizon]
        self.events = keep[-max_length:]
        return True

    def upto(self, event_id: str) -> list[SeqEvent]:
        """The prefix ending with ``event_id`` (what was known when that event happened)."""
        for i, e in enumerate(self.events):
            if e.event_id == event_id:
                return self.events[: i + 1]
        return []

    def to_bytes(self) -> bytes:
        parts = [_HEADER.pack(FORMAT_VERSION, self.updated_at, len(self.events))]
        for e in self.events:
            eid = e.event_id.encode()
            iid = e.item_id.encode() if e.item_id is not None else b""
            price = math.nan if e.price is None else e.price
            parts.append(
                _EVENT.pack(
                    e.ts,
                    _TYPE_CODE[e.type],
                    price,
                    len(eid),
                    len(iid) if e.item_id is not None else 255,
                )
            )
            parts.append(eid)
            parts.append(iid)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserSequence:
        if not raw:
            return cls()
        version, updated_at, count = _HEADER.unpack_from(raw, 0)
        if version != FORMAT_VERSION:
            raise ValueError(f"sequence format {version} unknown")
        offset, events = _HEADER.size, []
        for _ in range(count):
            ts, code, price, n_eid, n_iid = _EVENT.unpack_from(raw, offset)
            offset += _EVENT.size
            eid = raw[offset : offset + n_eid].decode()
            offset += n_eid
            item = None
            if n_iid != 255:
                item = raw[offset : offset + n_iid].decode()
                offset += n_iid
            events.append(
                SeqEvent(ts, EVENT_TYPES[code], eid, item, None if math.isnan(price) else price)
            )
        return cls(events, updated_at)


def seq_event(event: Event) -> SeqEvent:
    return SeqEvent(event.ts, event.type.value, event.event_id, event.item_id, event.price)
