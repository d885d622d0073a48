"""Trends against the real broker: a backlog read unevenly across partitions loses no event."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.settings import Settings
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    keyed,
    produce,
    read_all,
    valid_events,
)
from workers.kafka.topics import create_topics


async def test_a_backlog_read_unevenly_still_counts_every_event_in_its_trend(
    served: Settings, tmp_path: Path
) -> None:
    """The worker reads a backlog's partitions far apart in event time (each fetch takes a
    whole partition here). Closing a key's window on its first later partial dropped the
    slower partitions' partials (a quarter of them with flushes every 0.1 s); the watermark
    closes a window only once every partition has passed it, so each trend counts exactly
    the events produced in its window."""
    s = served
    await create_topics(s)
    events = valid_events(6_000, users=400, seed=7)  # 50 minutes of event time, 30 items
    await produce(s, s.topic("events"), keyed(events))
    width, grace = s.trend_window_seconds, s.trend_window_seconds
    newest = max(e["ts"] for e in events)
    expected: dict[tuple[str, float], int] = {}
    for e in events:
        start = float(e["ts"] // width * width)
        if start + width + grace <= newest:  # windows the final watermark passes
            key = (f"item:{e['item_id']}", start)
            expected[key] = expected.get(key, 0) + 1

    worker = WorkerProcess(s, tmp_path / "worker.log", trend_flush_seconds=0.1).start()
    try:
        async with TopicReader(s, s.topic("trends")) as trends:
            await trends.until(lambda r: len(r) >= len(expected), 120, [worker])
    finally:
        worker.stop()
    emitted = [orjson.loads(r.value) for r in trends.records]
    volumes = {(t["key"], t["window_start"]): t["volume"] for t in emitted}
    assert len(volumes) == len(emitted)  # each window once
    assert volumes == expected


async def test_a_stopping_worker_sends_the_partials_it_still_holds(
    served: Settings, tmp_path: Path
) -> None:
    """Their events are committed when the worker stops, so partials kept in memory would be
    lost: with a flush due only every minute, every event's partial still reaches
    ``trends.partial`` when the worker is stopped."""
    s = served
    await create_topics(s)
    events = valid_events(500, users=50, seed=11)
    await produce(s, s.topic("events"), keyed(events))
    worker = WorkerProcess(s, tmp_path / "worker.log", trend_flush_seconds=60).start()
    try:
        async with TopicReader(s, s.topic("predictions")) as predictions:
            await predictions.until(lambda r: len(r) >= len(events), 120, [worker])
    finally:
        worker.stop()  # SIGTERM, and waits for the exit
    sent = [orjson.loads(r.value) for r in await read_all(s, s.topic("trends.partial"))]
    items = [p for record in sent for p in record["partials"] if p["key"].startswith("item:")]
    assert sum(p["volume"] for p in items) == len(events)
