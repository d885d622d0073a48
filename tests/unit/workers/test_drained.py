"""Which events partitions stop holding the trend watermark back, and when."""

from __future__ import annotations

from faust.types import TP

from workers.pipeline.drained import DrainedPartitions

P0, P1 = TP("events", 0), TP("events", 1)


class _Partitions:
    """Stands in for the consumer and the ack lines: high-water marks, the first unfinished
    offsets, consumer positions, and a clock, each set by the test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.top: dict[TP, int | None] = {}
        self.unfinished: dict[TP, int | None] = {}
        self.position: dict[TP, int] = {}
        self.drained = DrainedPartitions(1.0, clock=lambda: self.now)

    async def _position(self, tp: TP) -> int | None:
        return self.position.get(tp)

    async def ask(self, *partitions: TP) -> dict[int, bool]:
        return await self.drained.idle(
            partitions, self.top.get, self.unfinished.get, self._position
        )


async def test_a_partition_is_idle_only_after_a_second_with_nothing_left_to_read() -> None:
    parts = _Partitions()
    parts.top = {P0: 10, P1: 10}
    parts.unfinished = {P0: 10, P1: 4}  # P0 finished up to its high-water mark; P1 is not
    assert await parts.ask(P0, P1) == {0: False, 1: False}  # P0 drained, but only just
    parts.now += 0.5
    assert await parts.ask(P0, P1) == {0: False, 1: False}
    parts.now += 0.5
    assert await parts.ask(P0, P1) == {0: True, 1: False}


async def test_new_messages_start_the_wait_again() -> None:
    parts = _Partitions()
    parts.top, parts.unfinished = {P0: 10}, {P0: 10}
    await parts.ask(P0)
    parts.now += 2.0
    assert await parts.ask(P0) == {0: True}
    parts.top[P0] = 15  # a burst arrived
    assert await parts.ask(P0) == {0: False}
    parts.unfinished[P0] = 15  # finished again: idle a second later, not at once
    assert await parts.ask(P0) == {0: False}
    parts.now += 1.0
    assert await parts.ask(P0) == {0: True}


async def test_a_partition_never_fetched_is_not_idle() -> None:
    parts = _Partitions()
    parts.top, parts.unfinished = {P0: None}, {P0: None}
    await parts.ask(P0)
    parts.now += 5.0
    assert await parts.ask(P0) == {0: False}


async def test_a_transaction_marker_counts_as_read_once_nothing_new_was_taken() -> None:
    """The marker takes offset 10 and is never delivered: the ack lines stop at 10 while the
    high-water mark is 11. Once the consumer's position is past it and the first unfinished
    offset stayed the same between two asks, the partition is drained."""
    parts = _Partitions()
    parts.top, parts.unfinished, parts.position = {P0: 11}, {P0: 10}, {P0: 11}
    assert await parts.ask(P0) == {0: False}  # first ask: nothing to compare with yet
    parts.now += 1.0
    assert await parts.ask(P0) == {0: False}  # drained since this ask
    parts.now += 1.0
    assert await parts.ask(P0) == {0: True}


async def test_a_position_short_of_the_high_water_mark_is_not_drained() -> None:
    parts = _Partitions()
    parts.top, parts.unfinished, parts.position = {P0: 11}, {P0: 10}, {P0: 10}
    for _ in range(3):
        parts.now += 1.0
        assert await parts.ask(P0) == {0: False}


async def test_a_partition_taken_away_is_forgotten() -> None:
    parts = _Partitions()
    parts.top, parts.unfinished = {P0: 10, P1: 10}, {P0: 10, P1: 10}
    await parts.ask(P0, P1)
    parts.now += 2.0
    assert await parts.ask(P0) == {0: True}  # P1 no longer assigned
    assert await parts.ask(P0, P1) == {0: True, 1: False}  # back: it waits its second again
