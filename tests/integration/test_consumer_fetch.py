"""The worker's Kafka consumer as it starts against the real broker."""

from __future__ import annotations

from schemas.settings import Settings
from workers.app import build_faust_app
from workers.kafka.faust_compat import PREFETCH_BACKOFF_SECONDS


async def test_an_unread_partition_holds_up_the_next_fetch_for_10_ms_not_100(
    settings: Settings,
) -> None:
    """aiokafka sends no fetch while a partition it fetched has records nobody took, for up
    to its prefetch backoff; the worker's changelog partitions are such partitions, so the
    worker's consumer starts with a 10 ms backoff instead of aiokafka's 100."""
    app = build_faust_app(settings)
    thread = app.consumer._thread  # what Faust starts; its aiokafka consumer is built then
    await thread.on_start()
    try:
        assert thread._consumer._fetcher._prefetch_backoff == PREFETCH_BACKOFF_SECONDS
    finally:
        await thread._consumer.stop()
