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

    ``idle`` says, for each ``events`` partition this worker holds, whether it has had
    nothing left to read for a while (the worker's watermark, see
    :func:`~workers.analytics.trends.worker_watermark`)."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        idle: Callable[[], Awaitable[dict[int, bool]]],
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.idle = idle
        self.source = f"{socket.gethostname()}:{os.getpid()}"
        self.sent_watermark: float | None = None
        self.parts = TrendAccumulator(settings.trend_window_seconds)
        self.trends = TrendAggregator(
            settings.trend_window_seconds,
            max_keys=settings.trend_max_keys,
            source_timeout=settings.session_timeout_seconds,
        )

    async def watermark(self) -> float | None:
        """This worker's watermark. It goes back when a partition is assigned (to ``HOLD``
        until read, then to where it resumes: a crashed worker's partition resumes from its
        last commit), so that no window closes under its events."""
        self.sent_watermark = worker_watermark(self.parts.reached, await self.idle())
        return self.sent_watermark

    async def flush(self) -> None:
        """Send this worker's partials and watermark as one record per partition of
        ``trends.partial`` (more where the partials would pass ~100 KB): a Faust message per
        partial cost about as much as scoring an event. (A timer: Faust would pass the app
        to a timer function that takes an argument.)"""
        await self._send(last=False)

    async def flush_last(self) -> None:
        """The worker is stopping, and its consumer may be gone. The partials still held go
        out (their events are committed, so they would be lost otherwise) with the watermark
        sent before, marked as the last, so that the owners stop waiting for this worker."""
        await self._send(last=True)

    async def _send(self, last: bool) -> None:
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
        envelope: dict = {"source": self.source, "watermark": watermark}  # TrendPartials
        if last:
            envelope["last"] = True
        step = PARTIALS_PER_RECORD
        records = [
            Record(None, orjson.dumps({**envelope, "partials": group[i : i + step]}), None, p)
            for p, group in groups.items()
            for i in range(0, max(len(group), 1), step)
        ]
        await self.publisher.send_many(topic, records)

    async def merge(self, stream) -> None:
        """The ``trends`` agent: merge each record's partials, close what the watermarks
        pass, publish."""
        async for event in stream.events():
            try:
                closed = self._take(orjson.loads(event.value), event.message.partition)
            except Exception:  # our own record, so a bug: logged, and the stream goes on
                log.exception("a trends.partial record could not be merged")
                continue
            await self._publish(closed)

    def _take(self, record: dict | list, partition: int) -> list[dict]:
        """Merge one TrendPartials record; the Trend records of the windows it closes."""
        if isinstance(record, list):  # a worker older than the watermark
            record = {"partials": record, "watermark": None}
        late, closed = self.trends.late, []
        for partial in record["partials"]:
            closed += self.trends.add(partial)
        metrics.TREND_PARTIALS_LATE.inc(self.trends.late - late)
        now = time.monotonic()
        if record.get("last"):  # the sender stopped: its watermark holds nothing open now
            self.trends.forget(record["source"], partition)
        elif record["watermark"] is not None:
            self.trends.hear(record["source"], partition, record["watermark"], now)
        else:
            return closed
        lowest = self.trends.watermark(now)
        return closed + (self.trends.close(lowest) if lowest is not None else [])

    def assigned(self, partitions: Iterable[TP]) -> None:
        """This worker's new assignment: watermarks heard on ``trends.partial`` partitions
        it no longer holds stop holding its windows open, and ``events`` partitions it no
        longer holds are forgotten (if one comes back, it holds the watermark until read)."""
        partitions = list(partitions)
        topic, events = self.settings.topic("trends.partial"), self.settings.topic("events")
        self.trends.keep_partitions({tp.partition for tp in partitions if tp.topic == topic})
        self.parts.keep_partitions({tp.partition for tp in partitions if tp.topic == events})

    async def close_idle(self) -> None:
        """Publish the windows that a silent worker held open (its watermark timed out) or,
        with no watermark heard, those of keys no partial closed."""
        await self._publish(self.trends.flush())

    async def _publish(self, trends: list[dict]) -> None:
        if trends:
            records = [Record(t["key"].encode(), orjson.dumps(t)) for t in trends]
            await self.publisher.send_many(self.settings.topic("trends"), records)
