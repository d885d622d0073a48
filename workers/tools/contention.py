"""Who else wanted the cores during a latency run, over the whole run and second by second.

On a small machine the worker shares its cores with the broker and the load generator. A
second whose p99 jumps may be the worker's own doing or a burst of someone else's work (the
broker deleting a finished run's files took half a core for a fifth of a second). Snapshots of
the machine's CPU time, the worker's, and how long the worker's event loop sat runnable without
a core (Linux ``schedstat``), taken every 100 ms, tell the two apart in the bench's report.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from workers.tools.worker_processes import ChildProcess, machine_cpu_seconds

SAMPLE_SECONDS = 0.1


def loop_waiting_seconds(pid: int) -> float:
    """Seconds the main thread of ``pid`` (a worker's event loop) has spent runnable but not
    running, waiting in the kernel's run queue for a core: the second field of its
    ``schedstat``."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by the machine, the worker (and its scoring process) and this
    bench process, and the worker's event loop's wait for a core: two of them give each one's
    share of the cores in between."""

    at: float  # epoch seconds, to line up with the records' timestamps
    machine: tuple[float, float]
    worker: dict[str, float]
    bench: float
    loop_waiting: float

    @classmethod
    def take(cls, worker: ChildProcess) -> CpuSnapshot:
        return cls(
            time.time(),
            machine_cpu_seconds(),
            worker.cpu_seconds(),
            time.process_time(),
            loop_waiting_seconds(worker.pid),
        )

    def share_until(self, later: CpuSnapshot) -> dict[str, float]:
        """How busy the cores were: ``machine_busy`` as a share of all of them, the rest in
        cores (1.0 is one core kept busy); ``broker_and_other`` is whatever else ran (the
        broker, when it shares the machine); ``loop_waiting`` is the share of the time the
        worker's event loop waited for a core."""
        wall = max(later.at - self.at, 1e-3)
        busy = later.machine[0] - self.machine[0]
        every = max(later.machine[1] - self.machine[1], 1e-9)
        worker = (later.worker["process"] - self.worker["process"]) / wall
        scoring = (later.worker["children"] - self.worker["children"]) / wall
        bench = (later.bench - self.bench) / wall
        return {
            "machine_busy": round(busy / every, 3),
            "worker": round(worker, 3),
            "scoring_process": round(scoring, 3),
            "bench": round(bench, 3),
            "broker_and_other": round(max(busy / wall - worker - scoring - bench, 0.0), 3),
            "loop_waiting": round((later.loop_waiting - self.loop_waiting) / wall, 3),
        }


class ContentionSampler:
    """Takes a snapshot every ``SAMPLE_SECONDS`` on the running event loop while in its
    ``async with``, and one on the way out."""

    def __init__(self, worker: ChildProcess) -> None:
        self.worker = worker
        self.samples: list[CpuSnapshot] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self.samples.append(CpuSnapshot.take(self.worker))

    async def __aenter__(self) -> ContentionSampler:
        self.samples.append(CpuSnapshot.take(self.worker))
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.samples.append(CpuSnapshot.take(self.worker))

    def whole(self) -> dict[str, float]:
        """The shares over everything sampled (``CpuSnapshot.share_until``)."""
        return self.samples[0].share_until(self.samples[-1])

    def annotate(self, rows: list[dict], origin: float) -> None:
        """Add to each of ``latency_by_second``'s rows (second ``row["second"]`` after
        ``origin``, in epoch seconds) the shares of that second. A second the samples do not
        cover is left as is."""
        for row in rows:
            start = origin + row["second"]
            first = next((s for s in self.samples if s.at >= start), None)
            last = next((s for s in self.samples if s.at >= start + 1), self.samples[-1])
            if first is not None and last.at - first.at >= SAMPLE_SECONDS / 2:
                row.update(first.share_until(last))
