"""Moving trend partials between workers and publishing the trends that close.

Each worker folds its events into partials (workers/analytics/trends.py) and, every
``trend_flush_seconds``, sends them to ``trends.partial`` in the partition its key hashes to;
the ``trends`` agent of whichever worker owns that partition merges them and publishes each
window's :class:`~schemas.records.Trend` record once it closes.
"""

from __future__ import annotations

import logging

import orjson

from schemas.settings import Settings
from workers.analytics.trends import TrendAccumulator, TrendAggregator
from workers.kafka.publisher import Publisher, Record

log = logging.getLogger(__name__)
PARTIALS_PER_RECORD = 500
"""Partials per ``trends.partial`` record: ~100 KB, well under Kafka's 1 MB record limit."""


class TrendExchange:
    """Flushes this worker's partials and merges the partials of the keys it owns."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.parts = TrendAccumulator(settings.trend_window_seconds)
        self.trends = TrendAggregator(
            settings.trend_window_seconds, max_keys=settings.trend_max_keys
        )

    async def flush(self) -> None:
        """Send this worker's partials as one record per partition of ``trends.partial``
        holding a list: a Faust message per partial cost about as much as scoring an event."""
        topic = self.settings.topic("trends.partial")
        partition_of = await self.publisher.partitioner(topic)
        groups: dict[int, list[dict]] = {}
        for partial in self.parts.drain():
            groups.setdefault(partition_of(partial["key"].encode()), []).append(partial)
        records = [
            Record(None, orjson.dumps(group[i : i + PARTIALS_PER_RECORD]), None, partition)
            for partition, group in groups.items()
            for i in range(0, len(group), PARTIALS_PER_RECORD)
        ]
        if records:
            await self.publisher.send_many(topic, records)

    async def merge(self, stream) -> None:
        """The ``trends`` agent: merge each record's partials, publish what closes."""
        async for raw in stream:
            closed = []
            try:
                for partial in orjson.loads(raw):
                    closed += self.trends.add(partial)
            except Exception:  # our own record, so a bug: logged, and the stream goes on
                log.exception("a trends.partial record could not be merged")
            await self._publish(closed)

    async def close_idle(self) -> None:
        """Publish the windows of keys that no partial closed, once the watermark passes."""
        await self._publish(self.trends.flush())

    async def _publish(self, trends: list[dict]) -> None:
        if trends:
            records = [Record(t["key"].encode(), orjson.dumps(t)) for t in trends]
            await self.publisher.send_many(self.settings.topic("trends"), records)
