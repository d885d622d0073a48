"""Acks in consumption order, whatever order the outputs were delivered in.

Faust commits the longest run of consecutive acked offsets it has seen, and right after a
partition is assigned it has no earlier offset to anchor that run: if offset n+1 is acked
before n (a later batch delivered first, or a DLQ record written while earlier events were
still being scored), the commit moves past n, and a crash before n is delivered loses it.
So every consumed message takes a place in its partition's line here, and Faust hears of an
ack only once every message before it in that partition is done. A message fetched in an
earlier consumer generation is finished without an ack: after the rebalance Faust delivers
it again from the committed offset, and that copy carries the ack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any


class Slot:
    """One consumed message's place in its partition's line."""

    __slots__ = ("done", "event")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.done = False


class OrderedAcks:
    """Per-partition lines of consumed messages; ``done`` acks the finished head of a line."""

    def __init__(self, generation: Callable[[], int]) -> None:
        self._generation = generation
        self._lines: dict[Any, deque[Slot]] = {}

    def track(self, event: Any) -> Slot:
        """Call in consumption order, once per message."""
        slot = Slot(event)
        self._lines.setdefault(event.message.tp, deque()).append(slot)
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
