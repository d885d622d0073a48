"""Trends against the real broker: a backlog read unevenly across partitions loses no event."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import orjson

from schemas.settings import Settings
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    keyed,
    produce,
    read_all,
    start_workers,
    valid_events,
)
from workers.kafka.publisher import _hash_slot
from workers.kafka.topics import create_topics


def _offline(events: list[dict], settings: Settings) -> dict:
    """(item key, window start) → the number of events in that window."""
    width = settings.trend_window_seconds
    counts: dict[tuple[str, float], int] = {}
    for e in events:
        key = (f"item:{e['item_id']}", float(e["ts"] // width * width))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _closable(events: list[dict], settings: Settings) -> set:
    """The windows that must close once every event is read, whichever worker reads which
    partition: those one window past their end by the slowest partition's newest event."""
    newest: dict[int, float] = {}
    for e in events:
        partition = _hash_slot(e["user_id"].encode(), settings.partitions)
        newest[partition] = max(newest.get(partition, 0.0), e["ts"])
    width = settings.trend_window_seconds
    return {k for k in _offline(events, settings) if k[1] + 2 * width <= min(newest.values())}


def _volumes(records: list) -> dict:
    """(item key, window start) → volume of the item trends emitted; each window once."""
    trends = [orjson.loads(r.value) for r in records]
    items = [t for t in trends if t["key"].startswith("item:")]
    volumes = {(t["key"], t["window_start"]): t["volume"] for t in items}
    assert len(volumes) == len(items)
    return volumes


def _assigned(port: int) -> frozenset[str]:
    """The events partitions a worker reports lag for: the ones assigned to it."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return frozenset(re.findall(r'^foresight_consumer_lag\{partition="(\d+)"\}', text, re.M))


async def _until_shared(ports: list[int], partitions: int, timeout: float = 90) -> None:
    """Until the workers hold disjoint shares of every partition, the same twice 2 s apart
    (a rebalance during the test would replay events, and their partials)."""
    deadline, before = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            shares = [_assigned(port) for port in ports]
        except OSError:
            shares = []
        if (
            shares
            and all(shares)
            and sum(map(len, shares)) == partitions == len(frozenset().union(*shares))
        ):
            if shares == before:
                return
            before = shares
        await asyncio.sleep(2)
    raise AssertionError(f"the workers never shared the partitions: {before}")


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
    ``trends.partial`` when the worker is stopped, in records marked as its last."""
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
    raw = await read_all(s, s.topic("trends.partial"))
    sent = [orjson.loads(r.value) for r in raw]
    items = [p for record in sent for p in record["partials"] if p["key"].startswith("item:")]
    assert sum(p["volume"] for p in items) == len(events)
    final = {r.partition: orjson.loads(r.value) for r in raw}  # each partition's newest
    assert len(final) == s.partitions and all(r.get("last") for r in final.values())


async def test_two_workers_close_windows_on_both_watermarks_and_a_stopped_one_holds_none(
    served: Settings, tmp_path: Path
) -> None:
    """Each worker reads half the partitions, and a window closes only once both have
    passed it: every window counts exactly its events. Then one worker stops: its last
    records end the wait for its watermark, so the next windows close long before the
    session timeout (60 s) would have dropped it."""
    s = served
    width = s.trend_window_seconds
    await create_topics(s)
    workers, ports = start_workers(s, tmp_path, 2)
    try:
        await _until_shared(ports, s.partitions)
        first = valid_events(6_000, users=400, seed=13)
        await produce(s, s.topic("events"), keyed(first))
        closable = _closable(first, s)
        async with TopicReader(s, s.topic("trends")) as trends:
            await trends.until(lambda r: _volumes(r).keys() >= closable, 120, workers)
            emitted_first = _volumes(trends.records)

            workers[0].stop()  # SIGTERM; the windows it merged and held open are lost
            await _until_shared(ports[1:], s.partitions)  # no events replayed by a rebalance
            gap = (max(e["ts"] for e in first) // width + 3) * width - 1_700_000_000
            later = valid_events(3_000, users=400, seed=14, prefix="l")
            for e in later:  # two empty windows after the first events
                e["ts"] += gap
            await produce(s, s.topic("events"), keyed(later))
            closable_later = _closable(later, s)
            await trends.until(lambda r: _volumes(r).keys() >= closable_later, 40, workers[1:])
            emitted_later = {
                k: v for k, v in _volumes(trends.records).items() if k[1] >= gap + 1_700_000_000
            }
    finally:
        for worker in workers:
            worker.stop()
    offline = _offline(first, s)
    assert emitted_first == {k: offline[k] for k in emitted_first}  # exact, none twice
    offline_later = _offline(later, s)
    assert emitted_later == {k: offline_later[k] for k in emitted_later}
