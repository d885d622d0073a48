"""Real topic I/O and expected results for the integration tests (worker processes come from
workers.tools.worker_processes)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codec import decode_event
from schemas.kafka_security import aiokafka_kwargs, topic_reader
from schemas.settings import Settings
from workers.pipeline.sequence import UserSequence, seq_event
from workers.tools.worker_processes import WorkerProcess


async def produce(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    rate: float | None = None,
    timeout_s: float = 40.0,
) -> None:
    """Send (key, value) pairs and wait until the broker has every one (each is retried for up
    to ``timeout_s``, so a producer can outlast a broker restart)."""
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings),
        acks="all",
        linger_ms=5,
        enable_idempotence=True,
        request_timeout_ms=int(timeout_s * 1000),
    )
    await producer.start()
    try:
        futures, began = [], time.monotonic()
        for i, (key, value) in enumerate(records):
            futures.append(await producer.send(topic, value, key=key))
            if rate and i % 100 == 99:
                await asyncio.sleep(max(0.0, began + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning, accumulating every record seen so far (``options``
    go to the consumer, e.g. ``isolation_level="read_committed"``)."""

    def __init__(self, settings: Settings, topic: str, **options: Any) -> None:
        self.settings, self.topic, self.options = settings, topic, options
        self.records: list = []
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self.consumer = topic_reader(self.settings, self.topic, **self.options)
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.consumer is not None
        await self.consumer.stop()

    async def poll(self) -> None:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=500)
        for records in batch.values():
            self.records.extend(records)

    async def until(
        self,
        done: Callable[[list], bool],
        timeout: float,
        workers: list[WorkerProcess] | None = None,
    ) -> list:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                logs = "\n".join(w.tail() for w in workers or [])
                raise AssertionError(
                    f"{self.topic}: timed out with {len(self.records)} records\n{logs}"
                )
            for w in workers or []:
                if not w.alive():
                    raise AssertionError(f"worker died:\n{w.tail()}")
            await self.poll()
        return self.records


async def read_all(settings: Settings, topic: str, idle: float = 2.0, **options: Any) -> list:
    """Every record currently in ``topic`` (stops after ``idle`` seconds without news)."""
    async with TopicReader(settings, topic, **options) as reader:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            before = len(reader.records)
            await reader.poll()
            if len(reader.records) > before:
                quiet_since = time.monotonic()
        return reader.records


TYPES = ["view", "click", "add_to_cart", "purchase", "rating", "review", "search", "login"]


def valid_events(n: int, users: int, seed: int = 0, prefix: str = "e") -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        etype = rng.choice(TYPES)
        ev = {
            "event_id": f"{prefix}{i}",
            "user_id": f"u{rng.randrange(users)}",
            "type": etype,
            "ts": 1_700_000_000 + i * 0.5 + rng.random(),
            "item_id": str(rng.randrange(30)),
        }
        if etype == "rating":
            ev["rating"] = rng.randint(1, 5)
        if etype == "review":
            ev["text"] = rng.choice(["great product, love it", "terrible, broken on arrival"])
        out.append(ev)
    return out


def offline_sequences(events: list[dict], settings: Settings) -> dict[str, list[str]]:
    """What the table must hold: the same rules applied to each user's events in order."""
    seqs: dict[str, UserSequence] = {}
    for raw in events:
        e = decode_event(orjson.dumps(raw))
        seqs.setdefault(e.user_id, UserSequence()).insert(
            seq_event(e), settings.window_seconds, settings.max_sequence_length
        )
    return {u: [e.event_id for e in s.events] for u, s in seqs.items()}


async def table_from_changelog(settings: Settings, **options: Any) -> dict[str, list[str]]:
    latest: dict[bytes, bytes | None] = {}
    for r in await read_all(settings, f"{settings.app_id}-sequences-changelog", **options):
        latest[r.key] = r.value
    return {
        k.decode(): [e.event_id for e in UserSequence.from_bytes(v).events]
        for k, v in latest.items()
        if v
    }


def keyed(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["user_id"].encode(), orjson.dumps(e)) for e in events]


def event_ids(records) -> set[str]:
    return {orjson.loads(r.value)["event_id"] for r in records}


class Seen:
    """The event_ids predicted so far, read incrementally (a long run has 10⁵ records: parsing
    them all at every poll would starve the workers of CPU)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._read = 0

    def update(self, records: list) -> set[str]:
        for record in records[self._read :]:
            self.ids.add(orjson.loads(record.value)["event_id"])
        self._read = len(records)
        return self.ids


async def assert_commits_reach_the_end(settings: Settings, timeout: float = 30.0) -> None:
    """The worker's consumer group commits every partition of ``events`` up to its end: no
    message stopped a partition's commit point."""
    topic = settings.topic("events")
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    reader = topic_reader(settings)
    await admin.start()
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await reader.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            offsets = await admin.list_consumer_group_offsets(settings.app_id)
            committed = {tp: offsets[tp].offset for tp in partitions if tp in offsets}
            if committed == ends:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"commits stopped short: {committed} != ends {ends}")
            await asyncio.sleep(1.0)
    finally:
        await reader.stop()
        await admin.close()


async def assert_every_event_scored(
    settings: Settings, events: list[dict], workers: list, timeout: float = 180.0
) -> None:
    """The end state the reliability tests ask for: every event predicted (waiting up to
    ``timeout`` for the last ones), every partition's commit point at the end of the input, and
    the table, read back from its changelog, equal to the offline computation."""
    async with TopicReader(settings, settings.topic("predictions")) as preds:
        await preds.until(lambda r: len(event_ids(r)) >= len(events), timeout, workers)
    await assert_commits_reach_the_end(settings)
    assert event_ids(preds.records) == {e["event_id"] for e in events}
    assert await table_from_changelog(settings) == offline_sequences(events, settings)


def start_workers(
    settings: Settings, logs: Path, count: int
) -> tuple[list[WorkerProcess], list[int]]:
    """``count`` workers, each with a metrics port of its own (to read its /metrics), logging
    to ``logs``/w<i>.log."""
    from tests.conftest import _free_port_pair

    ports = [_free_port_pair() for _ in range(count)]
    workers = [
        WorkerProcess(settings, logs / f"w{i}.log", metrics_port=port).start()
        for i, port in enumerate(ports)
    ]
    return workers, ports
