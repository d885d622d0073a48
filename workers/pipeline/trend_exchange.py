"""Moving trend partials between workers and publishing the trends that close.

Each worker folds its events into partials (workers/analytics/trends.py) and, every
``trend_flush_seconds``, sends them to ``trends.partial`` in the partition its key hashes to,
with its event-time watermark to every partition; the ``trends`` agent of whichever worker
owns that partition merges them and publishes each window's :class:`~schemas.records.Trend`
record once every worker's watermark has passed it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable

import orjson
from faust.types import TP

from schemas.settings import Settings
from workers import metrics
from workers.analytics.trends import TrendAccumulator, TrendAggregator, worker_watermark
from workers.kafka.publisher import Publisher, Record

log = logging.getLogger(__name__)
PARTIALS_PER_RECORD = 500
"""Partials per ``trends.partial`` record: ~100 KB, well under Kafka's 1 MB record limit."""


class TrendExchange:
    """Flushes this worker's partials and merges the partials of the keys it owns.

    ``drained`` says, for each ``events`` partition this worker holds, whether every message
    up to its high-water mark is finished (the worker's watermark, see
    :func:`~workers.analytics.trends.worker_watermark`)."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        drained: Callable[[], Awaitable[dict[int, bool]]],
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.drained = drained
        self.source = f"{socket.gethostname()}:{os.getpid()}"
        self.sent_watermark: float | None = None
        self.parts = TrendAccumulator(settings.trend_window_seconds)
        self.trends = TrendAggregator(
            settings.trend_window_seconds,
            max_keys=settings.trend_max_keys,
            source_timeout=settings.session_timeout_seconds,
        )

    async def watermark(self) -> float | None:
        """This worker's watermark. A partition newly assigned and not read yet holds it
        where it was; once read, it may take the watermark back (a crashed worker's
        partition resumes from its last commit), so that no window closes under it."""
        mark = worker_watermark(self.parts.reached, await self.drained())
        if mark is not None:
            self.sent_watermark = mark
        return self.sent_watermark

    async def flush(self, last: bool = False) -> None:
        """Send this worker's partials and watermark as one record per partition of
        ``trends.partial`` (more where the partials would pass ~100 KB): a Faust message per
        partial cost about as much as scoring an event.

        ``last``: the worker is stopping, and its consumer may be gone; the partials still
        held go out with the watermark sent before (their events are committed, so they
        would be lost otherwise)."""
        topic = self.settings.topic("trends.partial")
        partitions = await self.publisher.partitions(topic)
        partition_of = await self.publisher.partitioner(topic)
        # then drain at once: every partial behind the watermark goes
        watermark = self.sent_watermark if last else await self.watermark()
        if watermark is not None:
            metrics.TREND_WATERMARK.set(watermark)
        groups: dict[int, list[dict]] = {p: [] for p in partitions}
        for partial in self.parts.drain():
            groups[partition_of(partial["key"].encode())].append(partial)
        records = [
            Record(None, self._envelope(watermark, group[i : i + PARTIALS_PER_RECORD]), None, p)
            for p, group in groups.items()
            for i in range(0, max(len(group), 1), PARTIALS_PER_RECORD)
        ]
        await self.publisher.send_many(topic, records)

    def _envelope(self, watermark: float | None, partials: list[dict]) -> bytes:
        """A TrendPartials record (schemas/internal.py)."""
        return orjson.dumps({"source": self.source, "watermark": watermark, "partials": partials})

    async def merge(self, stream) -> None:
        """The ``trends`` agent: merge each record's partials, close what its watermark
        passes, publish."""
        async for event in stream.events():
            closed = []
            try:
                record = orjson.loads(event.value)
                if isinstance(record, list):  # a worker older than the watermark
                    record = {"partials": record, "watermark": None}
                late = self.trends.late
                for partial in record["partials"]:
                    closed += self.trends.add(partial)
                metrics.TREND_PARTIALS_LATE.inc(self.trends.late - late)
                mark = record["watermark"]
                if mark is not None:
                    now = time.monotonic()
                    self.trends.hear(record["source"], event.message.partition, mark, now)
                    lowest = self.trends.watermark(now)
                    if lowest is not None:
                        closed += self.trends.close(lowest)
            except Exception:  # our own record, so a bug: logged, and the stream goes on
                log.exception("a trends.partial record could not be merged")
            await self._publish(closed)

    def revoked(self, partitions: Iterable[TP]) -> None:
        """Partitions taken from this worker: the watermarks heard on ``trends.partial``
        ones no longer hold its windows open."""
        topic = self.settings.topic("trends.partial")
        self.trends.forget_partitions({tp.partition for tp in partitions if tp.topic == topic})

    async def close_idle(self) -> None:
        """Publish the windows that a silent worker held open (its watermark timed out) or,
        with no watermark heard, those of keys no partial closed."""
        await self._publish(self.trends.flush())

    async def _publish(self, trends: list[dict]) -> None:
        if trends:
            records = [Record(t["key"].encode(), orjson.dumps(t)) for t in trends]
            await self.publisher.send_many(self.settings.topic("trends"), records)
