"""The per-user sequence state: a compact binary encoding and the windowing rules.

One table value per user holds their recent events in time order, bounded by a time window and
a length, plus when it was last updated (for the inactivity sweep). The encoding is a packed
struct, a fraction of the size of a JSON list, and the same bytes go to the changelog.

Ids are stored with 16-bit byte lengths: the schema allows 128 characters, which is up to 512
bytes of UTF-8. Format 1 kept them in one byte, so a long non-ASCII id crashed the encoder;
format 1 values (written before that) are still read.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import NamedTuple

from models.vocab import EVENT_TYPES
from schemas.records import Event

FORMAT_VERSION = 2
_HEADER = struct.Struct("<BdH")  # version, updated_at, count
_EVENT = struct.Struct("<dBdHH")  # ts, type, price, len(event_id), len(item_id)
_NO_ITEM = 0xFFFF  # the item length that means "no item"
_EVENT_FORMATS = {1: (struct.Struct("<dBdBB"), 0xFF), FORMAT_VERSION: (_EVENT, _NO_ITEM)}
_TYPE_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}


class CorruptSequence(ValueError):
    """Stored bytes that are not a sequence this module wrote."""


class SeqEvent(NamedTuple):
    """What the model and the alert reasons need of one past event."""

    ts: float
    type: str
    event_id: str
    item_id: str | None
    price: float | None


def _encode(e: SeqEvent) -> bytes:
    """One event's bytes; raises (struct.error, UnicodeEncodeError, KeyError) on an event the
    format cannot hold, before anything is changed."""
    eid = e.event_id.encode()
    iid = e.item_id.encode() if e.item_id is not None else b""
    price = math.nan if e.price is None else e.price
    n_iid = len(iid) if e.item_id is not None else _NO_ITEM
    if len(iid) >= _NO_ITEM:
        raise struct.error(f"item_id of {len(iid)} bytes is too long to store")
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
        ``max_length`` of them remain. An event the format cannot hold raises and leaves the
        sequence exactly as it was.
        """
        if event.event_id in [e.event_id for e in self.events]:  # a list: faster than any()
            return False
        chunk = _encode(event)  # first: a failure must not leave half an insert behind
        stamps = [e.ts for e in self.events]
        position = bisect_right(stamps, event.ts)
        stamps.insert(position, event.ts)
        self.events.insert(position, event)
        self.chunks.insert(position, chunk)
        first = bisect_left(stamps, stamps[-1] - window_seconds)
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
        inactivity sweep looks at every user and needs nothing else); 0 for bytes too short
        to be a sequence, so the sweep expires them."""
        return _HEADER.unpack_from(raw, 0)[1] if len(raw) >= _HEADER.size else 0.0

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserSequence:
        """Decode a stored sequence; raises CorruptSequence for anything this module did not
        write (a wrong version, a count that does not match the bytes, bad UTF-8)."""
        if not raw:
            return cls()
        try:
            return cls._decode(raw)
        except (struct.error, UnicodeDecodeError, IndexError) as exc:
            raise CorruptSequence(f"undecodable sequence: {exc}") from None

    @classmethod
    def _decode(cls, raw: bytes) -> UserSequence:
        version, updated_at, fields = _walk(raw)
        events, chunks = [], []
        for start, end, ts, code, price, eid_at, item_at in fields:
            item = None if item_at is None else raw[item_at:end].decode()
            eid = raw[eid_at : end if item_at is None else item_at].decode()
            event = SeqEvent(ts, EVENT_TYPES[code], eid, item, None if math.isnan(price) else price)
            events.append(event)
            # chunks are always kept in the current format, so a re-encode writes one format
            chunks.append(raw[start:end] if version == FORMAT_VERSION else _encode(event))
        return cls(events, updated_at, chunks)


class ModelRows(NamedTuple):
    """What the model reads of several sequences, laid end to end: sequence i is the next
    ``lengths[i]`` values of each column, oldest first; ``type_codes`` index EVENT_TYPES."""

    lengths: list[int]
    ts: list[float]
    type_codes: list[int]
    items: list[str | None]


def model_rows(prefixes: list[bytes]) -> ModelRows:
    """The model's columns of a batch of encoded sequences, read straight from their bytes.

    The scoring process reads every prefix of every batch (eight events each on average in the
    bench), so this is the layout's second reader, beside :func:`_walk`: one loop appending to
    four flat lists, with no per-event tuples, event ids, prices or type names, took reading
    from ~8 to ~2.7 µs an event. Raises CorruptSequence as :meth:`UserSequence.from_bytes`
    does (unit tests hold the two readers to the same answers and refusals)."""
    lengths: list[int] = []
    ts: list[float] = []
    codes: list[int] = []
    items: list[str | None] = []
    try:
        for raw in prefixes:
            version, _, count = _HEADER.unpack_from(raw, 0)
            if version not in _EVENT_FORMATS:
                raise CorruptSequence(f"sequence format {version} unknown")
            layout, no_item = _EVENT_FORMATS[version]
            unpack, size = layout.unpack_from, layout.size
            offset = _HEADER.size
            for _ in range(count):
                stamp, code, _, n_eid, n_iid = unpack(raw, offset)
                offset += size + n_eid
                ts.append(stamp)
                codes.append(code)
                if n_iid == no_item:
                    items.append(None)
                else:
                    items.append(raw[offset : offset + n_iid].decode())
                    offset += n_iid
            if offset != len(raw):
                raise CorruptSequence(f"{count} events end at byte {offset} of {len(raw)}")
            lengths.append(count)
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptSequence(f"undecodable sequence: {exc}") from None
    if max(codes, default=0) >= len(EVENT_TYPES):
        raise CorruptSequence("an event type code this build does not know")
    return ModelRows(lengths, ts, codes, items)


_Fields = tuple[int, int, float, int, float, int, int | None]


def _walk(raw: bytes) -> tuple[int, float, list[_Fields]]:
    """(format version, updated_at, each event's fields): where the event starts and ends, its
    timestamp, type code and price, and where its event id and item id (None: no item)
    start. The table's reader of the layout (the scoring process reads its columns with
    :func:`model_rows`); it raises CorruptSequence for an unknown format, an id past the end
    or bytes left over."""
    version, updated_at, count = _HEADER.unpack_from(raw, 0)
    if version not in _EVENT_FORMATS:
        raise CorruptSequence(f"sequence format {version} unknown")
    layout, no_item = _EVENT_FORMATS[version]

    fields: list[_Fields] = []
    offset = _HEADER.size
    for _ in range(count):
        start = offset
        ts, code, price, n_eid, n_iid = layout.unpack_from(raw, offset)
        eid_at = offset + layout.size
        offset = item_at = eid_at + n_eid
        if n_iid != no_item:
            offset += n_iid
        fields.append(
            (start, offset, ts, code, price, eid_at, None if n_iid == no_item else item_at)
        )
    if offset > len(raw):
        raise CorruptSequence(f"the ids run {offset - len(raw)} bytes past the end")
    if offset < len(raw):
        raise CorruptSequence(f"{len(raw) - offset} bytes after {count} events")
    return version, updated_at, fields


def seq_event(event: Event) -> SeqEvent:
    return SeqEvent(event.ts, event.type.value, event.event_id, event.item_id, event.price)
