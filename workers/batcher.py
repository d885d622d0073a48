"""Micro-batching: up to B items or W milliseconds after the first, whichever comes first.

Under load the batch fills to B at once; when idle a lone event waits at most W. A bounded
queue pushes back on the consumer instead of buffering without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects submitted items and hands them to ``handle`` in batches, one batch at a time."""

    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[None]],
        max_size: int,
        max_wait_ms: float,
        queue_size: int | None = None,
    ) -> None:
        self.handle = handle
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[T] = asyncio.Queue(queue_size or 4 * max_size)
        self._task: asyncio.Task | None = None

    async def submit(self, item: T) -> None:
        """Queue one item; waits when the queue is full (backpressure)."""
        await self.queue.put(item)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def next_batch(self) -> list[T]:
        """Wait for one item, then take more until the batch is full or the wait is over."""
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_size:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            await self.handle(await self.next_batch())
