"""What the worker tells Faust about consumed messages, so that none is lost or acked twice.

Three gaps in faust-streaming 0.15 that this closes, each seen in the kill -9 test:

* Faust commits the longest run of consecutive acked offsets, and right after an assignment
  it has no earlier offset to anchor that run: an ack of offset n+1 before n (a later batch
  delivered first, or a DLQ record written while earlier events were still being scored)
  moves the commit past n, and a crash before n is delivered loses it. So every message takes
  a place in its partition's line, and Faust hears of an ack only once every message before it
  in that line is done.
* After a seek Faust can hand an offset over twice, and a second ack of one offset stops its
  commits for that partition for good. An offset already taken in this consumer generation is
  refused here; a message fetched in an older generation is finished without an ack (Faust
  delivers it again after the rebalance, and that copy carries the ack).
* A jump in offsets within a generation means messages went missing between the fetcher and
  the stream, which is how Faust's recovery race (faust-streaming #596, closed by
  ``Foresight._on_revoked``) showed itself; each stream checks that it starts at the committed
  offset, and every jump is reported. (Transaction markers in the input take offsets too.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class Slot:
    """One consumed message's place in its partition's line."""

    __slots__ = ("done", "event")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.done = False


@dataclass
class _Cursor:
    """Where a partition's stream stands in one consumer generation."""

    generation: int
    expected: int | None  # the next offset to take (None: whatever comes first)


class OrderedAcks:
    """Admits each offset once per generation, and acks in consumption order once done."""

    def __init__(self, generation: Callable[[], int]) -> None:
        self._generation = generation
        self._lines: dict[Any, deque[Slot]] = {}
        self._cursors: dict[Any, _Cursor] = {}
        self.jumps: list[tuple[Any, int, int]] = []  # (tp, expected, got), for the log

    def starts(self, tp: Any) -> bool:
        """True when ``tp`` has no cursor in the current generation: call ``begin`` first."""
        cursor = self._cursors.get(tp)
        return cursor is None or cursor.generation != self._generation()

    def begin(self, tp: Any, first_offset: int | None) -> None:
        """Start ``tp``'s line at the offset its stream must begin with (the committed one);
        None takes the first message that comes as the start."""
        self._cursors[tp] = _Cursor(self._generation(), first_offset)
        self._lines[tp] = deque()

    def track(self, event: Any) -> Slot | None:
        """Call in consumption order, once per message: its Slot, or None for a second copy
        of an offset already taken (finish that copy without acking it)."""
        message = event.message
        cursor = self._cursors[message.tp]
        offset = message.offset
        if cursor.expected is not None:
            if offset < cursor.expected:
                return None
            if offset > cursor.expected:
                self.jumps.append((message.tp, cursor.expected, offset))
        cursor.expected = offset + 1
        slot = Slot(event)
        self._lines[message.tp].append(slot)
        return slot

    def done(self, *slots: Slot) -> None:
        """The messages' outputs are on the broker: ack them and the finished ones behind
        them, draining each partition's line once however many slots finished."""
        lines = set()
        for slot in slots:
            slot.done = True
            lines.add(slot.event.message.tp)
        generation = self._generation()
        for tp in lines:
            line = self._lines.get(tp)
            while line and line[0].done:
                event = line.popleft().event
                if event.message.generation_id == generation:
                    event.ack()

    def forget(self, partitions: Iterable[Any]) -> None:
        """Partitions taken away: their unfinished messages will be redelivered to the new
        owner from the last commit, so nothing here may ack them any more."""
        for tp in partitions:
            self._lines.pop(tp, None)
            self._cursors.pop(tp, None)
