"""Which ``events`` partitions have had nothing left to read for a while: those no longer hold
the trend watermark back (workers/analytics/trends.py).

A partition is drained when every message up to its high-water mark is finished, as the ack
lines say (workers/pipeline/acks.py). Where they cannot tell (nothing taken in this
generation and nothing committed, or a transaction marker, which takes the offset after a
transaction's last message and is never delivered), it is drained once the consumer's
position is at the high-water mark and nothing new was taken from it since the last ask.

A high-water mark is only as fresh as the consumer's last fetch response, so a burst just
produced can look read for a moment. A partition therefore counts as idle only after
``idle_seconds`` of being drained: a backfill of old events otherwise closed windows under the
partitions not fetched yet (the two-worker trend test caught it).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

NOT_ASKED = -1
"""The first unfinished offset remembered for a partition not asked about before: no offset."""


class DrainedPartitions:
    """Remembers, between asks, each partition's first unfinished offset and since when it
    has been drained; a partition not asked about any more is forgotten."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._unfinished_before: dict[Any, int | None] = {}
        self._drained_since: dict[Any, float] = {}

    async def idle(
        self,
        partitions: Iterable[Any],
        highwater: Callable[[Any], int | None],
        unfinished_from: Callable[[Any], int | None],
        position: Callable[[Any], Awaitable[int | None]],
    ) -> dict[int, bool]:
        """Each of ``partitions`` (by number): drained for ``idle_seconds`` or more?"""
        now, idle = self.clock(), {}
        seen: dict[Any, int | None] = {}
        since: dict[Any, float] = {}
        for tp in partitions:
            top, unfinished = highwater(tp), unfinished_from(tp)
            seen[tp] = unfinished
            if top is None:  # not fetched from yet
                drained = False
            elif unfinished is not None and unfinished >= top:
                drained = True
            else:
                drained = (
                    self._unfinished_before.get(tp, NOT_ASKED) == unfinished
                    and (await position(tp) or 0) >= top
                )
            if drained:
                since[tp] = self._drained_since.get(tp, now)
            idle[tp.partition] = drained and now - since[tp] >= self.idle_seconds
        self._unfinished_before, self._drained_since = seen, since
        return idle
