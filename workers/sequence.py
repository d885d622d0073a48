"""The per-user sequence state: a compact binary encoding and the windowing rules.

One table value per user holds their recent events in time order, bounded by a time window and
a length, plus when it was last updated (for the inactivity sweep). The encoding is a packed
struct, a fraction of the size of a JSON list, and the same bytes go to the changelog.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import NamedTuple

from models.vocab import EVENT_TYPES
from schemas.records import Event

FORMAT_VERSION = 1
_HEADER = struct.Struct("<BdH")  # version, updated_at, count
_EVENT = struct.Struct("<dBdBB")  # ts, type, price, len(event_id), len(item_id)
_TYPE_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}


class SeqEvent(NamedTuple):
    """What the model and the alert reasons need of one past event."""

    ts: float
    type: str
    event_id: str
    item_id: str | None
    price: float | None


def _encode(e: SeqEvent) -> bytes:
    eid = e.event_id.encode()
    iid = e.item_id.encode() if e.item_id is not None else b""
    price = math.nan if e.price is None else e.price
    n_iid = len(iid) if e.item_id is not None else 255
    return _EVENT.pack(e.ts, _TYPE_CODE[e.type], price, len(eid), n_iid) + eid + iid


@dataclass
class UserSequence:
    """A user's recent events, oldest first.

    Each event's encoded bytes are kept beside it, so re-encoding after an insert is a join,
    not a re-pack of the whole sequence (this runs once per event on the hot path).
    """

    events: list[SeqEvent] = field(default_factory=list)
    updated_at: float = 0.0
    chunks: list[bytes] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.chunks) != len(self.events):
            self.chunks = [_encode(e) for e in self.events]

    def insert(self, event: SeqEvent, window_seconds: float, max_length: int) -> bool:
        """Insert in time order (late events too); False when the event_id is already present.

        Afterwards only events within ``window_seconds`` of the newest and at most
        ``max_length`` of them remain.
        """
        if any(e.event_id == event.event_id for e in self.events):
            return False
        position = bisect_right([e.ts for e in self.events], event.ts)
        self.events.insert(position, event)
        self.chunks.insert(position, _encode(event))
        horizon = self.events[-1].ts - window_seconds
        first = bisect_left([e.ts for e in self.events], horizon)
        first = max(first, len(self.events) - max_length)
        if first > 0:
            del self.events[:first]
            del self.chunks[:first]
        return True

    def upto(self, event_id: str) -> list[SeqEvent]:
        """The prefix ending with ``event_id`` (what was known when that event happened)."""
        for i in range(len(self.events) - 1, -1, -1):
            if self.events[i].event_id == event_id:
                return self.events[: i + 1]
        return []

    def prefix_bytes(self, count: int) -> bytes:
        """The encoding of the first ``count`` events alone: what the scorer is sent."""
        return _HEADER.pack(FORMAT_VERSION, self.updated_at, count) + b"".join(self.chunks[:count])

    def to_bytes(self) -> bytes:
        return self.prefix_bytes(len(self.events))

    @staticmethod
    def updated_at_of(raw: bytes) -> float:
        """When the stored sequence was last updated, read from the header alone (the
        inactivity sweep looks at every user and needs nothing else)."""
        return _HEADER.unpack_from(raw, 0)[1] if raw else 0.0

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserSequence:
        if not raw:
            return cls()
        version, updated_at, count = _HEADER.unpack_from(raw, 0)
        if version != FORMAT_VERSION:
            raise ValueError(f"sequence format {version} unknown")
        offset, events, chunks = _HEADER.size, [], []
        for _ in range(count):
            start = offset
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
            chunks.append(raw[start:offset])
        return cls(events, updated_at, chunks)


def seq_event(event: Event) -> SeqEvent:
    return SeqEvent(event.ts, event.type.value, event.event_id, event.item_id, event.price)
