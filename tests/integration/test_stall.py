"""A worker that stops making progress says so on /readyz, exits, and loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from pathlib import Path

from schemas.settings import Settings
from tests.conftest import _free_port_pair
from tests.support.processes import gone, probe, scoring_child, wait_for
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    assert_every_event_scored,
    event_ids,
    keyed,
    produce,
    valid_events,
)
from workers.health import EXIT_STALLED
from workers.kafka.topics import create_topics


async def test_a_frozen_scoring_process_makes_the_worker_unready_then_exit(
    served: Settings, tmp_path: Path
) -> None:
    s = served
    port = _free_port_pair()
    await create_topics(s)
    first, second = valid_events(1_000, users=100, seed=11), valid_events(1_000, 100, 12, "f")
    worker = WorkerProcess(s, tmp_path / "w1.log", metrics_port=port, stall_seconds=4).start()
    child = None
    try:
        await produce(s, s.topic("events"), keyed(first))
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(event_ids(r)) >= len(first), 120, [worker])
        await wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "/readyz to answer 200")
        assert probe(port, "/healthz") == (200, {"status": "ok"})

        child = scoring_child(worker.pid)
        os.kill(child, signal.SIGSTOP)  # the model stops answering; the event loop does not
        await produce(s, s.topic("events"), keyed(second))
        _, body = await wait_for(
            lambda: (answer := probe(port, "/readyz"))[0] == 503 and answer, 30, "/readyz 503"
        )
        assert "has not moved" in body["status"], body
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        assert b'foresight_partition_stalled{partition="' in metrics
        assert probe(port, "/healthz")[0] == 200  # alive: a restart is the watchdog's call

        assert worker.proc is not None
        code = await asyncio.to_thread(worker.proc.wait, 60)
        assert code == EXIT_STALLED, worker.tail()
        assert "no progress: partition" in worker.tail()
        await wait_for(lambda: gone(child), 10, "the scoring process to be killed")
    finally:
        worker.stop()
        if child and Path(f"/proc/{child}").exists():
            os.kill(child, signal.SIGKILL)

    restarted = WorkerProcess(s, tmp_path / "w2.log", metrics_port=port, stall_seconds=4).start()
    try:
        await assert_every_event_scored(s, first + second, [restarted])
    finally:
        restarted.stop()
