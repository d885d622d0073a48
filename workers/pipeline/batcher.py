"""Micro-batching: up to B items, or until the stage the batches feed is free while the
consumer is caught up, or until the oldest has waited W milliseconds since it was submitted,
whichever comes first.

A batch closes as soon as no batch before it holds the handler's first stage (the scoring
process; the handler says when its batch lets go of it with ``free()``), if the newest item
says the consumer is caught up (``caught_up``). Under light load an event is handed over at
once, with whatever arrived beside it, instead of waiting W for company that is not coming;
under load the batch grows for as long as the stage is busy. Behind a backlog the batch fills
to B (or W) whether the stage is free or not: a loop that has thousands of events to catch up
on spends less on each in full batches. W bounds the wait. The wait is counted from
submission, not from when the batcher took the item: an item that already waited in the queue
while earlier batches were being handled closes its batch at once with whatever is queued
behind it. A bounded queue pushes back on the consumer instead of buffering without limit.
With ``concurrency`` 2 the next batch is handed over while the previous one is still being
handled, so a scorer in another process can work on one batch while the event loop publishes
the other (the handler keeps its own outputs in order).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class MicroBatcher(Generic[T]):
    """Collects submitted items and hands them to ``handle`` in batches, at most
    ``concurrency`` batches at a time."""

    def __init__(
        self,
        handle: Callable[[list[T], Callable[[], None]], Coroutine[Any, Any, None]],
        max_size: int,
        max_wait_ms: float,
        queue_size: int | None = None,
        concurrency: int = 1,
        caught_up: Callable[[T], bool] = lambda item: True,
    ) -> None:
        self.handle = handle
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[tuple[float, T]] = asyncio.Queue(queue_size or 4 * max_size)
        self.concurrency = concurrency
        self.caught_up = caught_up
        self._task: asyncio.Task | None = None
        self._handling: set[asyncio.Task] = set()
        self._in_first_stage = 0  # batches handed over that have not called free()
        self._wake: asyncio.Future | None = None  # a batch waiting to fill or for a free stage
        self._room = 1  # items the waiting batch has room for

    async def submit(self, item: T) -> None:
        """Queue one item; waits when the queue is full (backpressure)."""
        await self.queue.put((time.monotonic(), item))
        if self._wake is not None and self.queue.qsize() >= self._room:
            self._wake_up()  # not once per item while a batch grows: once it can fill

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        for task in [self._task, *self._handling]:
            if task:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

    async def next_batch(self) -> list[T]:
        """Wait for one item, then take more until the batch is full, or none is queued while
        no batch holds the first stage and the consumer is caught up, or the first item's wait
        (from its submission) is over."""
        submitted, first = await self.queue.get()
        batch = [first]
        deadline = submitted + self.max_wait
        while len(batch) < self.max_size:
            try:
                batch.append(self.queue.get_nowait()[1])
                continue
            except asyncio.QueueEmpty:
                pass
            if not self._in_first_stage and self.caught_up(batch[-1]):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._room = self.max_size - len(batch)
            await self._sleep(remaining)
        return batch

    async def _sleep(self, seconds: float) -> None:
        """Until the queue holds enough to fill the batch, the first stage is freed, or
        ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        self._wake = waker = loop.create_future()
        timer = loop.call_later(seconds, self._wake_up)
        try:
            await waker
        finally:
            timer.cancel()
            self._wake = None

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            await slots.acquire()  # first, so the batch is taken as late (and as full) as can be
            batch = await self.next_batch()
            free = self._holder()
            task = asyncio.get_running_loop().create_task(self.handle(batch, free))
            self._handling.add(task)
            task.add_done_callback(functools.partial(self._finished, slots, free))

    def _holder(self) -> Callable[[], None]:
        """A batch's hold on the first stage, and the ``free`` that lets go of it (once; the
        batcher calls it too when the handler ends without doing so)."""
        self._in_first_stage += 1
        held = True

        def free() -> None:
            nonlocal held
            if held:
                held = False
                self._in_first_stage -= 1
                self._wake_up()

        return free

    def _finished(
        self, slots: asyncio.Semaphore, free: Callable[[], None], task: asyncio.Task
    ) -> None:
        free()
        self._handling.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a batch failed", exc_info=task.exception())
