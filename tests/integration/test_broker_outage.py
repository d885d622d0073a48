"""Broker outages against a real worker: outputs the broker cannot take are retried in place;
past ``publish_timeout_seconds`` the worker exits loudly for a restart. Either way every event
is predicted, no commit point freezes, and the table matches the input."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from schemas.settings import Settings
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    assert_every_event_scored,
    event_ids,
    keyed,
    produce,
    valid_events,
)
from workers.kafka.publisher import EXIT_CANNOT_PUBLISH
from workers.kafka.topics import create_topics
from workers.tools.local_broker import LocalBroker


async def stop_broker(kafka: LocalBroker) -> None:
    await asyncio.to_thread(kafka.stop)


async def start_broker(kafka: LocalBroker) -> None:
    await asyncio.to_thread(kafka.start)


async def test_two_broker_restarts_mid_stream_lose_nothing(
    served: Settings, kafka: LocalBroker, tmp_path: Path
) -> None:
    s = served
    await create_topics(s)
    events = valid_events(10_000, users=500, seed=21)
    await produce(s, s.topic("events"), keyed(events[:3_000]))  # a backlog, then a live feed
    worker = WorkerProcess(s, tmp_path / "worker.log", publish_timeout_seconds=90).start()
    feed = asyncio.create_task(produce(s, s.topic("events"), keyed(events[3_000:]), rate=300))
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            for target in (2_000, 5_000):
                await preds.until(lambda r, t=target: len(event_ids(r)) >= t, 120, [worker])
                await stop_broker(kafka)
                await asyncio.sleep(3)
                await start_broker(kafka)
        await feed
        await assert_every_event_scored(s, events, [worker])
        assert worker.alive(), "the worker gave up on an outage it should have ridden out"
    finally:
        feed.cancel()
        worker.stop()


async def test_worker_exits_for_a_restart_when_the_broker_stays_away(
    served: Settings, kafka: LocalBroker, tmp_path: Path
) -> None:
    s = served
    await create_topics(s)
    events = valid_events(30_000, users=1_000, seed=22)
    await produce(s, s.topic("events"), keyed(events))
    log = tmp_path / "worker.log"
    slow = {"publish_timeout_seconds": 3, "batch_size": 16}  # mid-backlog when the broker goes
    worker = WorkerProcess(s, log, **slow).start()
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(event_ids(r)) >= 1_000, 120, [worker])
        await stop_broker(kafka)
        began = time.monotonic()
        while worker.alive() and time.monotonic() - began < 60:
            await asyncio.sleep(0.5)
        code = worker.proc.poll() if worker.proc else None
    finally:
        worker.stop()  # a worker that did not give up must not outlive the test
        await start_broker(kafka)
    assert code == EXIT_CANNOT_PUBLISH, (code, worker.tail())
    assert f"exiting with code {EXIT_CANNOT_PUBLISH}" in worker.tail(20_000)

    worker = WorkerProcess(s, log).start()  # what the orchestrator does next
    try:
        await assert_every_event_scored(s, events, [worker])
    finally:
        worker.stop()
