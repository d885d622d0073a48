"""SIGTERM mid-stream: the worker finishes and publishes what it holds, commits, exits 0 within
its grace period, and its successor neither misses nor repeats an event."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import orjson

from schemas.settings import Settings
from tests.support.processes import scoring_child
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    assert_commits_reach_the_end,
    assert_every_event_scored,
    event_ids,
    keyed,
    produce,
    valid_events,
)
from workers.kafka.topics import create_topics
from workers.shutdown import EXIT_GRACE_EXPIRED


async def test_sigterm_drains_commits_and_exits_zero(served: Settings, tmp_path: Path) -> None:
    s = served
    await create_topics(s)
    events = valid_events(8_000, users=400, seed=31)
    await produce(s, s.topic("events"), keyed(events[:6_000]))  # a backlog: batches in hand
    worker = WorkerProcess(s, tmp_path / "w1.log", "info", event_loop="uvloop").start()
    feeding = asyncio.create_task(produce(s, s.topic("events"), keyed(events[6_000:]), rate=500))
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(event_ids(r)) >= 2_000, 120, [worker])
            assert worker.proc is not None
            os.kill(worker.pid, signal.SIGTERM)  # as Kubernetes does: the main process only
            began = time.monotonic()
            code = await asyncio.to_thread(worker.proc.wait, 60)
            took = time.monotonic() - began
            await feeding
            before = len(preds.records)
            successor = WorkerProcess(s, tmp_path / "w2.log").start()
            try:
                await preds.until(lambda r: len(event_ids(r)) >= len(events), 180, [successor])
                await assert_commits_reach_the_end(s)
            finally:
                successor.stop()
    finally:
        feeding.cancel()
        worker.stop()
    counts = collections.Counter(orjson.loads(r.value)["event_id"] for r in preds.records)
    repeated = {e: n for e, n in counts.items() if n > 1}
    assert 0 < before < len(events)  # stopped mid-stream, with a backlog behind it
    assert code == 0, worker.tail()
    assert "event loop: uvloop" in (tmp_path / "w1.log").read_text()  # the faster loop
    assert took < s.shutdown_grace_seconds, took
    assert set(counts) == {e["event_id"] for e in events}
    assert repeated == {}, f"{len(repeated)} events predicted twice"


async def test_a_stop_that_cannot_finish_exits_when_the_grace_period_ends(
    served: Settings, tmp_path: Path
) -> None:
    s = served
    await create_topics(s)
    events = valid_events(2_000, users=200, seed=32)
    worker = WorkerProcess(s, tmp_path / "w1.log", "info", shutdown_grace_seconds=3).start()
    child = None
    try:
        await produce(s, s.topic("events"), keyed(events[:500]))
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(event_ids(r)) >= 500, 120, [worker])
        child = scoring_child(worker.pid)
        os.kill(child, signal.SIGSTOP)  # the batches in hand can never finish
        await produce(s, s.topic("events"), keyed(events[500:]))
        await asyncio.sleep(1)
        os.kill(worker.pid, signal.SIGTERM)
        began = time.monotonic()
        assert worker.proc is not None
        code = await asyncio.to_thread(worker.proc.wait, 60)
        took = time.monotonic() - began
    finally:
        worker.stop()
        if child and Path(f"/proc/{child}").exists():
            os.kill(child, signal.SIGKILL)
    assert code == EXIT_GRACE_EXPIRED, worker.tail()
    assert 3 <= took < 10, took
    assert "did not finish within FORESIGHT_SHUTDOWN_GRACE_SECONDS=3" in worker.tail()
    assert "event loop: asyncio" in (tmp_path / "w1.log").read_text()  # the default loop
    successor = WorkerProcess(s, tmp_path / "w2.log").start()
    try:
        await assert_every_event_scored(s, events, [successor])
    finally:
        successor.stop()
