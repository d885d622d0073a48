"""A worker that stops making progress says so on /readyz, exits, and loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from schemas.settings import Settings
from tests.conftest import _free_port_pair
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


def probe(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def scoring_child(parent: int) -> int:
    """The pid of the worker's scoring process (a child running workers.scoring.child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"workers.scoring.child" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no scoring child under pid {parent}")


async def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


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
        await wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 10, "kill")
    finally:
        worker.stop()
        if child and Path(f"/proc/{child}").exists():
            os.kill(child, signal.SIGKILL)

    restarted = WorkerProcess(s, tmp_path / "w2.log", metrics_port=port, stall_seconds=4).start()
    try:
        await assert_every_event_scored(s, first + second, [restarted])
    finally:
        restarted.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
