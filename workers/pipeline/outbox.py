"""Where a consumed message's outputs go, and when the message counts as done.

At-least-once (the default): a message is acked only once every output it caused is on the
broker (acks=all), without the stream waiting for that meanwhile; at-least-once under kill -9
rests on this one rule. Exactly-once: the outputs wait for their partition's next transaction
instead, with the message's offset (workers/pipeline/transactions.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import NamedTuple

from schemas.codec import Stage
from schemas.settings import Settings
from workers import metrics
from workers.kafka.publisher import Publisher, Record
from workers.pipeline.acks import OrderedAcks, Slot
from workers.pipeline.dead_letters import dlq_record
from workers.pipeline.transactions import Transactions

Hooks = Mapping[str, Callable[[asyncio.Future], object]]
"""topic → called with each delivery future of that topic's records (the changelog's
persisted offset)."""


class Output(NamedTuple):
    """One record a consumed message causes, on a topic (the full name)."""

    slot: Slot
    topic: str
    record: Record


class Outbox:
    """Sends the outputs of consumed messages and finishes the messages behind them."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        acks: OrderedAcks,
        transactions: Transactions | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.acks = acks
        self.transactions = transactions  # None: at-least-once
        self.hooks = hooks or {}

    def dead_letter(self, slot: Slot, stage: Stage, error: str) -> Output:
        """The DLQ record of one message."""
        metrics.DLQ.labels(stage).inc()
        record = dlq_record(slot.event.message, stage, error)
        return Output(slot, self.settings.topic("events.dlq"), record)

    async def reject(self, slot: Slot, stage: Stage, error: str) -> None:
        """Dead-letter one message; it is finished once its DLQ record is."""
        await self.emit([slot], [self.dead_letter(slot, stage, error)])

    async def emit(
        self, slots: list[Slot], outputs: list[Output], scored: int = 0
    ) -> asyncio.Future:
        """Publish ``outputs`` (in order per topic) and finish ``slots`` once they are all on
        the broker (committed, in exactly-once mode); returns the future of that. A failed
        delivery finishes nothing: the publisher has then stopped the worker (see
        workers/kafka/publisher.py)."""
        if self.transactions is not None:
            for output in outputs:
                if output.slot.outputs is None:
                    output.slot.outputs = []
                output.slot.outputs.append((output.topic, output.record))
            self.acks.done(*slots)
            finished = self.transactions.committed(slots)
        else:
            by_topic: dict[str, list[Record]] = {}
            for output in outputs:
                by_topic.setdefault(output.topic, []).append(output.record)
            futures = []
            for topic, records in by_topic.items():
                sent = await self.publisher.send_many(topic, records)
                hook = self.hooks.get(topic)
                if hook is not None:
                    for future in sent:
                        future.add_done_callback(hook)
                futures += sent
            finished = asyncio.gather(*futures)

            def ack(done: asyncio.Future) -> None:
                if _succeeded(done):
                    self.acks.done(*slots)

            finished.add_done_callback(ack)

        def count(done: asyncio.Future) -> None:
            if _succeeded(done):
                metrics.SCORED.inc(scored)

        finished.add_done_callback(count)
        return finished


def _succeeded(done: asyncio.Future) -> bool:
    return not done.cancelled() and done.exception() is None
