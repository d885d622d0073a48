"""Who else wanted the cores, second by second, during a latency run.

On a small machine the worker shares its cores with the broker and the load generator. A
second whose p99 jumps may be the worker's own doing or a burst of someone else's work (the
broker deleting a finished run's files took half a core for a fifth of a second). Sampling the
machine's CPU time, the worker's, and how long the worker's event loop sat runnable without a
core (Linux ``schedstat``) every 100 ms tells the two apart in the bench's report.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from workers.tools.worker_processes import ChildProcess, machine_cpu_seconds

SAMPLE_SECONDS = 0.1


def waiting_seconds(pid: int, tid: int | None = None) -> float:
    """Seconds a thread (the main one by default) has spent runnable but not running: waiting
    in the kernel's run queue for a core (second field of ``/proc/<pid>/task/<tid>/schedstat``).
    """
    fields = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
    return int(fields[1]) / 1e9


@dataclass(frozen=True)
class Sample:
    """Running totals at one moment (CPU seconds; ``at`` in epoch seconds)."""

    at: float
    machine_busy: float
    machine_all: float
    worker: float  # the worker's threads and its scoring process
    bench: float  # this process: the load generator
    loop_waiting: float  # the worker's event loop, runnable without a core


def take(worker: ChildProcess) -> Sample:
    busy, every = machine_cpu_seconds()
    used = worker.cpu_seconds()
    return Sample(
        time.time(),
        busy,
        every,
        used["process"] + used["children"],
        time.process_time(),
        waiting_seconds(worker.pid),
    )


class ContentionSampler:
    """Samples every ``SAMPLE_SECONDS`` on the running event loop while in its ``async with``."""

    def __init__(self, worker: ChildProcess) -> None:
        self.worker = worker
        self.samples: list[Sample] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(take(self.worker))
            await asyncio.sleep(SAMPLE_SECONDS)

    async def __aenter__(self) -> ContentionSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.samples.append(take(self.worker))

    def annotate(self, rows: list[dict], origin: float) -> None:
        """Add to each of ``latency_by_second``'s rows (second ``row["second"]`` after
        ``origin``, in epoch seconds) what the machine was doing then: ``machine_busy``, the
        share of all cores in use; ``others``, cores used by neither the worker nor this process
        (the broker, when it shares the machine); ``loop_waiting``, the share of the second the
        worker's event loop waited for a core. A second the samples do not cover is left as is.
        """
        for row in rows:
            start = origin + row["second"]
            row.update(self._between(start, start + 1) or {})

    def _between(self, start: float, end: float) -> dict | None:
        first = next((s for s in self.samples if s.at >= start), None)
        last = next((s for s in self.samples if s.at >= end), self.samples[-1])
        if first is None or last.at - first.at < SAMPLE_SECONDS / 2:
            return None
        wall = last.at - first.at
        busy = last.machine_busy - first.machine_busy
        every = max(last.machine_all - first.machine_all, 1e-9)
        mine = (last.worker - first.worker) + (last.bench - first.bench)
        return {
            "machine_busy": round(busy / every, 3),
            "others": round(max(busy - mine, 0.0) / wall, 3),
            "loop_waiting": round((last.loop_waiting - first.loop_waiting) / wall, 3),
        }
