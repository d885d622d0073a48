"""What fills the monitor: the ``trends`` and ``alerts`` topics, read outside any consumer group
(the monitor commits nothing and writes nothing to the broker), and the workers' metrics pages.

Both loops outlive a broker or a worker that is away: they say so in ``status`` (the page shows
it) and try again, since a monitor that exits when what it watches is down shows nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from pydantic import ValidationError

from schemas.kafka_security import topic_partitions, topic_reader
from schemas.records import Alert, Trend
from schemas.settings import Settings
from workers.monitor.state import MonitorState
from workers.monitor.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)
RETRY_SECONDS = (1.0, 30.0)
"""First and longest wait before the topics are tried again (doubling in between)."""


class FeedStatus:
    """One line per feed for the page: ``ok`` or what is wrong, and since when."""

    def __init__(self) -> None:
        self.lines: dict[str, dict] = {}

    def set(self, feed: str, status: str) -> None:
        if self.lines.get(feed, {}).get("status") != status:
            self.lines[feed] = {"status": status, "since": time.time()}
            (log.info if status == "ok" else log.warning)("%s: %s", feed, status)


async def follow_topics(
    settings: Settings, state: MonitorState, status: FeedStatus, backlog: int
) -> None:
    """Read ``trends`` and ``alerts`` into ``state``, starting ``backlog`` records before the
    end of each partition (a page opened now shows the recent past, not an empty table)."""
    names = {settings.topic("trends"): "trends", settings.topic("alerts"): "alerts"}
    wait = RETRY_SECONDS[0]
    while True:
        try:
            await _follow(settings, state, status, names, backlog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker is away or the topics are not there yet
            if status.lines.get("topics", {}).get("status") == "ok":
                wait = RETRY_SECONDS[0]  # it was reading: start the backoff afresh
            status.set(
                "topics", f"{type(exc).__name__}: {exc}"[:200] + f"; retrying in {wait:.0f}s"
            )
            await asyncio.sleep(wait)
            wait = min(RETRY_SECONDS[1], wait * 2)


async def _follow(
    settings: Settings,
    state: MonitorState,
    status: FeedStatus,
    names: dict[str, str],
    backlog: int,
) -> None:
    partitions = [tp for topic in names for tp in await topic_partitions(settings, topic)]
    missing = set(names) - {tp.topic for tp in partitions}
    if missing:
        raise LookupError(f"topic(s) {', '.join(sorted(missing))} not found")
    consumer = topic_reader(settings)
    await consumer.start()
    try:
        consumer.assign(partitions)
        first = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(first[tp], ends[tp] - backlog))
        status.set("topics", "ok")
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    _take(state, names[tp.topic], record.value)
    finally:
        await consumer.stop()


def _take(state: MonitorState, feed: str, value: bytes | None) -> None:
    """Add one record; one that breaks its schema is counted and passed over (the monitor
    is a reader: it has no dead-letter topic to own)."""
    try:
        if feed == "trends":
            state.add_trend(Trend.model_validate_json(value or b""))
        else:
            state.add_alert(Alert.model_validate_json(value or b""))
    except ValidationError:
        state.skipped()


async def scrape_metrics(metrics: WorkerMetrics, status: FeedStatus, every: float) -> None:
    """Fetch every worker's ``/metrics`` each ``every`` seconds."""
    timeout = aiohttp.ClientTimeout(total=max(0.5, every * 0.8))
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def fetch(url: str) -> str | Exception:
            try:
                async with session.get(url) as response:
                    response.raise_for_status()
                    return await response.text()
            except Exception as exc:  # a worker that is starting, stopped or elsewhere
                return exc

        while True:
            began = time.monotonic()
            pages = await asyncio.gather(*(fetch(u) for u in metrics.urls))
            metrics.record(dict(zip(metrics.urls, pages, strict=True)))
            errors = len(metrics.errors)
            status.set("metrics", "ok" if not errors else f"{errors} of {len(pages)} not answering")
            await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))
