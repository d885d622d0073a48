"""Real topic I/O for the integration tests (worker processes come from workers.processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings
from workers.processes import WorkerProcess


async def produce(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    rate: float | None = None,
) -> None:
    """Send (key, value) pairs and wait until the broker has every one."""
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings), acks="all", linger_ms=5, enable_idempotence=True
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
    """Reads a topic from the beginning, accumulating every record seen so far."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.records: list = []
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self.consumer = AIOKafkaConsumer(
            self.topic,
            **aiokafka_kwargs(self.settings),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
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


async def read_all(settings: Settings, topic: str, idle: float = 2.0) -> list:
    """Every record currently in ``topic`` (stops after ``idle`` seconds without news)."""
    async with TopicReader(settings, topic) as reader:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            before = len(reader.records)
            await reader.poll()
            if len(reader.records) > before:
                quiet_since = time.monotonic()
        return reader.records
