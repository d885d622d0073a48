"""The worker group's committed offsets, read from the broker.

A partition's stream must begin at its committed offset in every consumer generation; checking
that is how the worker notices messages lost between Faust's fetcher and the stream
(workers/acks.py).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings


class CommittedOffsets:
    """Reads the group's committed offset of a partition, from the broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        # In the worker's group, but never subscribed, so it never joins the group.
        self._consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings),
            group_id=self.settings.app_id,
            enable_auto_commit=False,
        )
        await self._consumer.start()
        self._started.set()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def committed(self, tp) -> int | None:
        """The committed offset of ``tp`` (a Faust or aiokafka TopicPartition), or None."""
        await self._started.wait()  # agents may start before the app's services
        assert self._consumer is not None
        return await self._consumer.committed(TopicPartition(tp.topic, tp.partition))
