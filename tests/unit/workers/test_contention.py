"""The latency run's contention figures (workers/tools/contention.py) and their report line."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from workers.tools.bench_report import _worst_second
from workers.tools.contention import ContentionSampler, CpuSnapshot, loop_waiting_seconds
from workers.tools.worker_processes import ChildProcess


def _at(at: float, busy: float, worker: float, bench: float, waiting: float) -> CpuSnapshot:
    # two cores (all = 2 s a second); the worker's CPU split evenly with its scoring process
    return CpuSnapshot(at, (busy, 2 * at), {"process": worker, "children": worker}, bench, waiting)


def test_each_second_gets_its_own_shares_of_the_cores() -> None:
    sampler = ContentionSampler(worker=None)  # type: ignore[arg-type]  # samples given below
    sampler.samples = [
        _at(100.0, 50.0, 10.0, 5.0, 1.0),
        _at(100.5, 50.6, 10.15, 5.1, 1.05),
        _at(101.0, 51.2, 10.3, 5.2, 1.10),  # second 0: 1.2 cores busy, 0.8 the worker's and mine
        _at(101.5, 52.1, 10.45, 5.3, 1.30),
        _at(102.0, 53.0, 10.6, 5.4, 1.50),  # second 1: 1.8 busy, 0.8 known, the loop waits 0.4 s
    ]
    rows = [{"second": 0, "p99": 30.0}, {"second": 1, "p99": 90.0}, {"second": 7, "p99": 40.0}]
    sampler.annotate(rows, origin=100.0)
    picked = ("machine_busy", "broker_and_other", "loop_waiting", "bench")
    assert [rows[0][k] for k in picked] == pytest.approx([0.6, 0.4, 0.1, 0.2])
    assert [rows[1][k] for k in picked] == pytest.approx([0.9, 1.0, 0.4, 0.2])
    assert rows[2] == {"second": 7, "p99": 40.0}  # after the samples: nothing to say
    whole = sampler.whole()  # the run: first sample to last
    assert (whole["machine_busy"], whole["loop_waiting"]) == pytest.approx((0.75, 0.25))


def test_the_worst_second_line_compares_slow_seconds_with_the_rest() -> None:
    rows = [
        {"second": 0, "p50": 20, "p99": 40.0, "max": 45, "loop_waiting": 0.05},
        {"second": 1, "p50": 30, "p99": 95.0, "max": 99, "loop_waiting": 0.25},
        {"second": 2, "p50": 20, "p99": 42.0, "max": 44, "loop_waiting": 0.07},
    ]
    for row, busy, others in zip(rows, (0.6, 0.9, 0.7), (0.1, 0.5, 0.2), strict=True):
        row.update(machine_busy=busy, broker_and_other=others)
    rows.append({"second": 3, "p50": 30, "p99": 60.0, "max": 61})  # a part-second, no samples
    line = _worst_second(rows)
    assert "worst p99 95.0 ms (second 1 of 4); 2 of 4 seconds had p99 over 50 ms" in line
    assert "In those seconds the loop waited 25% of the time, 90% busy, 0.50 cores" in line
    assert "in the others the loop waited 6% of the time, 65% busy, 0.15 cores" in line
    assert "Disturbed" not in line
    for row in rows[:3]:
        row["broker_and_other"] += 0.6  # another process took most of a core throughout
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
        assert len(sampler.samples) >= 3  # on the way in, every 100 ms, and on the way out
        assert loop_waiting_seconds(os.getpid()) >= 0.0
        whole = sampler.whole()
        assert 0.0 <= whole["machine_busy"] <= 1.0 and whole["worker"] < 0.5  # it sleeps
    finally:
        child.stop()
