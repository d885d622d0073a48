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
* A jump in offsets means messages went missing between the fetcher and the stream, which is
  how Faust's recovery race (faust-streaming #596, closed by
  ``RebalanceHooks.on_rebalance_complete``, workers/kafka/rebalance.py) showed itself. Each
  partition's line starts, in every generation, at the offset Faust committed, and every
  jump is logged. (Transaction markers in the input take offsets too.)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class Slot:
    """One consumed message's place in its partition's line, and (exactly-once mode only) the
    outputs it waits to commit with (workers/pipeline/transactions.py)."""

    __slots__ = ("done", "event", "outputs")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.done = False
        self.outputs: list[tuple[str, Any]] | None = None


def ack(slot: Slot) -> None:
    """At-least-once: a message is finished once its outputs are on the broker."""
    slot.event.ack()


@dataclass
class _Cursor:
    """Where a partition's stream stands in one consumer generation."""

    generation: int
    expected: int | None  # the next offset to take (None: whatever comes first)


class OrderedAcks:
    """Admits each offset once per generation, and acks in consumption order once done.

    The hooks and the order they are called in, on the event loop only (no locking):

    1. ``track(event)`` by the ingest agent, for each message Faust delivers, in delivery order.
    2. ``done(*slots)`` once every output of those messages is on the broker (or, in
       exactly-once mode, waits for its transaction); any number of times, in any order
       across slots, each slot at most once.
    3. ``forget(partitions)`` from ``on_partitions_revoked``, before the new generation's
       messages are delivered; slots of those partitions may still reach ``done`` afterwards
       and are then ignored.
    """

    def __init__(
        self,
        generation: Callable[[], int],
        committed: Callable[[Any], int | None],
        release: Callable[[Slot], None] = ack,
    ) -> None:
        self._generation = generation
        self._committed = committed  # tp → the offset its stream must start at, or None
        self._release = release  # what happens to a finished message, in line order
        self._lines: dict[Any, deque[Slot]] = {}
        self._cursors: dict[Any, _Cursor] = {}

    def track(self, event: Any) -> Slot | None:
        """Call in consumption order, once per message: its Slot, or None for a second copy
        of an offset already taken (finish that copy without acking it).

        Before: ``event`` is the next message Faust delivered for its partition. After: a
        returned Slot is last in its partition's line, and the line of a partition seen
        first in this consumer generation starts at Faust's committed offset."""
        message = event.message
        tp, offset = message.tp, message.offset
        cursor = self._cursors.get(tp)
        generation = self._generation()
        if cursor is None or cursor.generation != generation:  # a new line for a new generation
            cursor = self._cursors[tp] = _Cursor(generation, self._committed(tp))
            self._lines[tp] = deque()
        if cursor.expected is not None:
            if offset < cursor.expected:
                return None
            if offset > cursor.expected:
                log.warning(
                    "%s: offsets %d..%d never reached the stream (transaction markers take "
                    "offsets too; anything else is a bug worth reporting)",
                    tp,
                    cursor.expected,
                    offset - 1,
                )
        cursor.expected = offset + 1
        slot = Slot(event)
        self._lines[tp].append(slot)
        return slot

    def done(self, *slots: Slot) -> None:
        """The messages are finished (their outputs are on the broker, or handed to their
        transaction): release them and the finished ones behind them (``release``: ack them),
        draining each partition's line once however many slots finished.

        Before: each slot came from ``track`` and was not passed to ``done`` before. After:
        every message at the head of each line that is done has been released, in offset
        order, and none after the first one still pending; messages fetched in an older
        generation are dropped from the line unreleased (Faust redelivers them)."""
        lines = set()
        for slot in slots:
            slot.done = True
            lines.add(slot.event.message.tp)
        generation = self._generation()
        for tp in lines:
            line = self._lines.get(tp)
            while line and line[0].done:
                slot = line.popleft()
                if slot.event.message.generation_id == generation:
                    self._release(slot)

    def unfinished_from(self, tp: Any) -> int | None:
        """The first offset of ``tp`` not finished yet, or None if not known: the head of its
        line, else the next offset to take, else (a partition not taken from in this
        consumer generation) the committed offset."""
        cursor = self._cursors.get(tp)
        if cursor is None or cursor.generation != self._generation():
            return self._committed(tp)
        line = self._lines.get(tp)
        if line:
            return line[0].event.message.offset
        return cursor.expected if cursor.expected is not None else self._committed(tp)

    def forget(self, partitions: Iterable[Any]) -> None:
        """Partitions taken away: their unfinished messages will be redelivered to the new
        owner from the last commit, so nothing here may ack them any more.

        Before: Faust has stopped delivering these partitions. After: they have no line and no
        cursor; a later ``track`` for one starts a fresh line at the committed offset."""
        for tp in partitions:
            self._lines.pop(tp, None)
            self._cursors.pop(tp, None)
