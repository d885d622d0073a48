"""Micro-batching: up to B items, or until the oldest has waited W milliseconds since it was
submitted, whichever comes first.

Under load the batch fills to B at once; when idle a lone event waits at most W. The wait is
counted from submission, not from when the batcher took the item: an item that already
waited in the queue while earlier batches were being handled closes its batch at once with
whatever is queued behind it, rather than waiting W more. A bounded
queue pushes back on the consumer instead of buffering without limit. With ``concurrency`` 2
the next batch is handed over while the previous one is still being handled, so a scorer in
another process can work on one batch while the event loop publishes the other (the handler
keeps its own outputs in order).
"""

from __future__ import annotations

import asyncio
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
        handle: Callable[[list[T]], Coroutine[Any, Any, None]],
        max_size: int,
        max_wait_ms: float,
        queue_size: int | None = None,
        concurrency: int = 1,
    ) -> None:
        self.handle = handle
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[tuple[float, T]] = asyncio.Queue(queue_size or 4 * max_size)
        self.concurrency = concurrency
        self._task: asyncio.Task | None = None
        self._handling: set[asyncio.Task] = set()

    async def submit(self, item: T) -> None:
        """Queue one item; waits when the queue is full (backpressure)."""
        await self.queue.put((time.monotonic(), item))

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
        """Wait for one item, then take more until the batch is full or the first item's
        wait, counted from its submission, is over."""
        submitted, first = await self.queue.get()
        batch = [first]
        deadline = submitted + self.max_wait
        while len(batch) < self.max_size:
            try:
                batch.append(self.queue.get_nowait()[1])
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append((await asyncio.wait_for(self.queue.get(), remaining))[1])
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            await slots.acquire()  # first, so the batch is taken as late (and as full) as can be
            batch = await self.next_batch()
            task = asyncio.get_running_loop().create_task(self.handle(batch))
            self._handling.add(task)
            task.add_done_callback(lambda done: self._finished(done, slots))

    def _finished(self, task: asyncio.Task, slots: asyncio.Semaphore) -> None:
        self._handling.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a batch failed", exc_info=task.exception())
