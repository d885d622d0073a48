"""The operator's scenario of issue #12, by hand: a 10,000-event replay at 200 events/s with the
broker restarted twice, the second time after 45 s down, default worker settings.

    .venv/bin/python -m tests.manual.broker_outage_replay [WORKDIR]

Prints when each outage starts and ends, whether every event was predicted with the worker
never restarted, whether the commits reached the end, whether the table equals the offline
reference, how long SIGTERM took, and the size of the worker's log. (Kept out of the test run:
it takes about two minutes.)
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tests.support.manual_stack import local_stack
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    assert_commits_reach_the_end,
    event_ids,
    keyed,
    offline_sequences,
    produce,
    table_from_changelog,
    valid_events,
)

OUTAGES = ((2_500, 5.0), (6_000, 45.0))  # (predictions seen, seconds down)


async def main(root: Path) -> None:
    kafka, s = await local_stack(root, "outage")
    events = valid_events(10_000, users=500, seed=5)
    worker = WorkerProcess(s, root / "worker.log").start()
    feed = asyncio.create_task(
        produce(s, s.topic("events"), keyed(events), rate=200, timeout_s=180)
    )
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"{time.monotonic() - began:6.1f}s {text}", flush=True)

    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            for target, down in OUTAGES:
                await preds.until(lambda r, t=target: len(event_ids(r)) >= t, 300, [worker])
                say(f"{len(event_ids(preds.records))} predicted; broker down for {down:.0f} s")
                await asyncio.to_thread(kafka.stop)
                await asyncio.sleep(down)
                await asyncio.to_thread(kafka.start)
                say("broker back")
            await feed
            await preds.until(lambda r: len(event_ids(r)) >= len(events), 300, [worker])
        say(f"all {len(events)} predicted, worker never restarted: {worker.alive()}")
        await assert_commits_reach_the_end(s, timeout=60)
        say("commits reached the end of every partition")
        same = await table_from_changelog(s) == offline_sequences(events, s)
        say(f"table equals the offline reference: {same}")
        stop_began = time.monotonic()
        worker.stop()
        took = time.monotonic() - stop_began
        assert worker.proc is not None
        say(f"SIGTERM to exit {took:.1f} s, exit code {worker.proc.returncode}")
        log = root / "worker.log"
        say(f"worker log: {log.stat().st_size:,} bytes, {len(log.read_text().splitlines())} lines")
    finally:
        feed.cancel()
        worker.stop()
        await asyncio.to_thread(kafka.stop)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/foresight-outage")))
