"""Follow the compacted ``catalog`` topic: every worker reads all of it (no consumer group),
from the beginning at start, then as items are published, and hands each item's text to the
scoring process, which embeds the items its model does not know so they can be ranked.

Reading the topic from the beginning is what makes catalog items survive a restart: the
compacted topic keeps each item's latest record. A record that is not a valid catalog item is
logged and skipped (it is configuration, not an event: it has no DLQ and stops nothing); a
null value (a tombstone) forgets the item.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer

from schemas.codec import InvalidRecord, decode
from schemas.kafka_security import topic_partitions, topic_reader
from schemas.records import CatalogItem
from schemas.settings import Settings
from workers.scoring.process import ScoringProcess

log = logging.getLogger(__name__)
CATCH_UP_SECONDS = 60.0
"""How long a starting worker reads the catalog's backlog before it goes on regardless."""


class CatalogFollower:
    """Reads the catalog's backlog at start, then follows new records."""

    def __init__(self, settings: Settings, process: ScoringProcess) -> None:
        self.settings = settings
        self.process = process
        self.topic = settings.topic("catalog")
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task | None = None
        self.items = 0  # catalog items the scoring process keeps

    async def _apply(self, records) -> None:
        put, remove = [], []
        for record in records:
            if record.value is None:
                if record.key:
                    remove.append(record.key.decode(errors="replace"))
                continue
            try:
                item = decode(CatalogItem, record.value)
            except InvalidRecord as exc:
                log.error(
                    "skipping a bad record on %s at offset %d: %s", self.topic, record.offset, exc
                )
                continue
            put.append((item.item_id, item.text()))
        if put or remove:
            limit = self.settings.catalog_max_items
            self.items = await self.process.update_catalog(put, remove, limit)

    async def start(self) -> None:
        """Read the topic up to its end offsets at start (bounded by ``CATCH_UP_SECONDS``),
        then follow it in a task."""
        consumer = self.consumer = topic_reader(self.settings)
        await consumer.start()
        parts = await topic_partitions(self.settings, self.topic)
        if parts:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            deadline = asyncio.get_running_loop().time() + CATCH_UP_SECONDS
            behind = {tp for tp in parts if end[tp] > 0}
            while behind and asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                await self._apply([r for records in batch.values() for r in records])
                behind = {tp for tp in behind if await consumer.position(tp) < end[tp]}
            log.info("catalog: %d items rankable beyond the model's own", self.items)
        else:
            log.warning("topic %s not found: no catalog items will be ranked", self.topic)
        self.task = asyncio.get_running_loop().create_task(self._follow(), name="catalog-follower")

    async def _follow(self) -> None:
        assert self.consumer is not None
        if not self.consumer.assignment():
            return
        while True:
            batch = await self.consumer.getmany(timeout_ms=1000)
            records = [r for part in batch.values() for r in part]
            if records:
                await self._apply(records)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        if self.consumer:
            await self.consumer.stop()
