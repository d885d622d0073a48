"""Produce events to the ``events`` topic from a dataset, a file or the generator.

Paced at a target rate, or by the events' own timestamps compressed by a factor, with a
progress bar and a summary. Keys are user ids, so each user's events stay in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.files import read_event_file, read_movielens_items, read_movielens_ratings
from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings
from workers.tools.generator import Generator
from workers.tuning import frozen_heap


def movielens_events(directory: Path) -> list[dict]:
    """MovieLens-100K ratings as rating events in time order, titles and genre in attrs."""
    items = read_movielens_items(directory)
    events: list[dict[str, Any]] = []
    for n, (user, item, rating, ts) in enumerate(read_movielens_ratings(directory)):
        meta = items.get(item)
        attrs = (
            {"title": meta.title[:256], "category": (meta.genres or ("unknown",))[0]}
            if meta
            else {}
        )
        events.append(
            {
                "event_id": f"ml{n}",
                "user_id": user,
                "type": "rating",
                "ts": ts,
                "item_id": item,
                "rating": rating,
                "attrs": attrs,
            }
        )
    events.sort(key=lambda e: e["ts"])  # stable: ties keep file order
    return events


def source_events(
    spec: str, limit: int | None, seed: int = 0, fraud_rate: float = 0.02
) -> tuple[Iterable[dict], int | None]:
    """(events, count if known) for ``ml100k:DIR``, ``jsonl|csv|parquet:FILE`` or
    ``synthetic`` (the generator)."""
    kind, _, target = spec.partition(":")
    if kind == "ml100k":
        events = movielens_events(Path(target))[:limit]
        return events, len(events)
    if kind in ("jsonl", "csv", "parquet", "file"):
        valid = read_event_file(Path(target))
        events = [e.model_dump(mode="json", exclude_none=True) for e in valid][:limit]
        return events, len(events)
    if kind == "synthetic":
        n = limit or 10_000
        return (e for e, _ in Generator(seed=seed, fraud_rate=fraud_rate).events(n)), n
    raise ValueError(f"unknown source {spec!r}: ml100k:DIR, jsonl:FILE, csv:FILE, synthetic")


@dataclass
class ProduceStats:
    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def _paced(
    events: Iterable[dict], rate: float | None, speedup: float | None
) -> Iterator[tuple[dict, float]]:
    """Each event with the wall-clock offset at which it should be sent."""
    first_ts = None
    for i, e in enumerate(events):
        if rate:
            yield e, i / rate
        elif speedup:
            ts = float(e["ts"]) if not isinstance(e["ts"], str) else 0.0
            first_ts = ts if first_ts is None else first_ts
            yield e, (ts - first_ts) / speedup
        else:
            yield e, 0.0


ACKS_CHECKED = 10_000
"""Sent events whose acks are awaited together, once twice as many are in flight. Awaiting
each 1,000 sent held a paced stream up for the acks' round trip (10-30 ms) every 1,000 events
and then sent the backlog in a burst, and the latency bench counted the bursts' queueing as
the worker's."""


async def produce(
    settings: Settings,
    events: Iterable[dict],
    total: int | None,
    rate: float | None = None,
    speedup: float | None = None,
    progress: bool = True,
) -> ProduceStats:
    """Send every event (key = user_id) and wait for the broker to have them all."""
    topic = settings.topic("events")
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings),
        acks="all",
        linger_ms=10,
        enable_idempotence=True,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    sent = 0
    columns = (
        TextColumn("produce"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]:>8.0f} ev/s"),
    )
    try:
        with frozen_heap(), Progress(*columns, disable=not progress, transient=False) as bar:
            began = time.monotonic()  # after the collection that frozen_heap starts with
            task = bar.add_task("produce", total=total, rate=0.0)
            pending = []
            for event, offset in _paced(events, rate, speedup):
                delay = began + offset - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(
                    await producer.send(
                        topic, orjson.dumps(event), key=str(event["user_id"]).encode()
                    )
                )
                sent += 1
                if len(pending) >= 2 * ACKS_CHECKED:  # long acked by now: the pacing never waits
                    await asyncio.gather(*pending[:ACKS_CHECKED])
                    del pending[:ACKS_CHECKED]
                if sent % 1000 == 0:
                    bar.update(
                        task, completed=sent, rate=sent / max(time.monotonic() - began, 1e-9)
                    )
            await asyncio.gather(*pending)
            bar.update(task, completed=sent, rate=sent / max(time.monotonic() - began, 1e-9))
    finally:
        await producer.stop()
    return ProduceStats(sent, time.monotonic() - began)
