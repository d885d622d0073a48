"""Where a consumed message's outputs go, and when the message counts as done.

A message is acked only once every output it caused is on the broker (acks=all), without the
stream waiting for that meanwhile: at-least-once under kill -9 rests on this one rule.
"""

from __future__ import annotations

import asyncio

from schemas.codec import Stage
from schemas.settings import Settings
from workers import metrics
from workers.kafka.publisher import Headers, Publisher
from workers.pipeline.acks import OrderedAcks, Slot
from workers.pipeline.dead_letters import dlq_record


class Outbox:
    """Sends outputs through the worker's one publisher and acks the messages behind them."""

    def __init__(self, settings: Settings, publisher: Publisher, acks: OrderedAcks) -> None:
        self.settings = settings
        self.publisher = publisher
        self.acks = acks

    async def send(
        self, base: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> asyncio.Future:
        """Queue one record on the topic named ``base``; returns its delivery future."""
        return await self.publisher.send(self.settings.topic(base), key, value, headers)

    async def dead_letter(self, slot: Slot, stage: Stage, error: str) -> asyncio.Future:
        """Queue the DLQ record of one message; returns its delivery future."""
        metrics.DLQ.labels(stage).inc()
        record = dlq_record(slot.event.message, stage, error)
        return await self.send("events.dlq", record.key, record.value, record.headers)

    async def reject(self, slot: Slot, stage: Stage, error: str) -> None:
        """Dead-letter one message; it is acked once its DLQ record is on the broker."""
        self.ack_when_delivered([slot], [await self.dead_letter(slot, stage, error)])

    def ack_when_delivered(
        self, slots: list[Slot], futures: list[asyncio.Future], scored: int = 0
    ) -> asyncio.Future:
        """Ack ``slots`` once every output in ``futures`` is on the broker; returns the
        future of that delivery. A failed delivery acks nothing: the publisher has then
        stopped the worker (see workers/kafka/publisher.py)."""
        delivered = asyncio.gather(*futures)

        def settle(done: asyncio.Future) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            self.acks.done(*slots)
            metrics.SCORED.inc(scored)

        delivered.add_done_callback(settle)
        return delivered
