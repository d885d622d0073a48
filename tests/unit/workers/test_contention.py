"""The latency run's contention figures (workers/tools/contention.py) and their report line."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from workers.tools.bench_report import _worst_second
from workers.tools.contention import ContentionSampler, Sample, waiting_seconds
from workers.tools.worker_processes import ChildProcess


def _sample(at: float, busy: float, worker: float, bench: float, waiting: float) -> Sample:
    return Sample(at, busy, 2 * at, worker, bench, waiting)  # two cores: all = 2 s a second


def test_a_second_gets_the_machine_the_others_and_the_loop_s_wait() -> None:
    sampler = ContentionSampler(worker=None)  # type: ignore[arg-type]  # samples given below
    sampler.samples = [
        _sample(100.0, 50.0, 20.0, 5.0, 1.0),
        _sample(100.5, 50.6, 20.3, 5.1, 1.05),
        _sample(101.0, 51.2, 20.6, 5.2, 1.10),  # second 0: 1.2 cores busy, 0.8 mine
        _sample(101.5, 52.1, 20.9, 5.3, 1.30),
        _sample(102.0, 53.0, 21.2, 5.4, 1.50),  # second 1: 1.8 busy, 0.8 mine, loop waits 0.4 s
    ]
    rows = [{"second": 0, "p99": 30.0}, {"second": 1, "p99": 90.0}, {"second": 7, "p99": 40.0}]
    sampler.annotate(rows, origin=100.0)
    assert rows[0] == pytest.approx(
        {"second": 0, "p99": 30.0, "machine_busy": 0.6, "others": 0.4, "loop_waiting": 0.1}
    )
    assert rows[1] == pytest.approx(
        {"second": 1, "p99": 90.0, "machine_busy": 0.9, "others": 1.0, "loop_waiting": 0.4}
    )
    assert rows[2] == {"second": 7, "p99": 40.0}  # after the samples: nothing to say


def test_the_worst_second_line_compares_slow_seconds_with_the_rest() -> None:
    rows = [
        {"second": 0, "p50": 20, "p99": 40.0, "max": 45, "loop_waiting": 0.05},
        {"second": 1, "p50": 30, "p99": 95.0, "max": 99, "loop_waiting": 0.25},
        {"second": 2, "p50": 20, "p99": 42.0, "max": 44, "loop_waiting": 0.07},
    ]
    for row, busy, others in zip(rows, (0.6, 0.9, 0.7), (0.1, 0.5, 0.2), strict=True):
        row.update(machine_busy=busy, others=others)
    rows.append({"second": 3, "p50": 30, "p99": 60.0, "max": 61})  # a part-second, no samples
    line = _worst_second(rows)
    assert "worst p99 95.0 ms (second 1 of 4); 2 of 4 seconds had p99 over 50 ms" in line
    assert "In those seconds the loop waited 25% of the time, 90% busy, 0.50 cores" in line
    assert "in the others the loop waited 6% of the time, 65% busy, 0.15 cores" in line
    assert "Disturbed" not in line
    for row in rows[:3]:
        row["others"] += 0.6  # another process took most of a core throughout
    assert "**Disturbed:** something besides the worker" in _worst_second(rows)
    for row in rows:  # a bench without the samples says only what it measured
        row.pop("loop_waiting", None)
    assert _worst_second(rows).endswith("seconds had p99 over 50 ms.")


async def test_the_sampler_reads_a_real_child_and_the_kernel_s_run_queue(tmp_path) -> None:
    child = ChildProcess(
        ["-c", "import time; time.sleep(30)"],
        dict(os.environ),
        tmp_path / "child.log",
        launcher=[sys.executable],
    ).start()
    try:
        async with ContentionSampler(child) as sampler:
            await asyncio.sleep(0.25)
        assert len(sampler.samples) >= 3  # every 100 ms, and one on the way out
        assert waiting_seconds(os.getpid()) >= 0.0
        first, last = sampler.samples[0], sampler.samples[-1]
        assert last.at >= first.at and last.machine_all > first.machine_all - 1e-9
    finally:
        child.stop()
