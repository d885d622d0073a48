"""Exactly-once mode: each input partition's outputs and consumed offsets in one transaction.

At-least-once publishes a message's outputs as soon as they are built and commits its offset
later, so a crash in between publishes them again. Here a finished message's outputs wait,
in its partition's line order (workers/pipeline/acks.py), until its partition's next Kafka
transaction: predictions, alerts, DLQ records and the group's offset for the messages behind
them commit together or not at all, so a ``read_committed`` reader sees each event's outputs
once, across kill -9. A partition's next transaction starts once its previous one has ended
and ``transaction_interval_ms`` has passed since that one began, with whatever finished
meanwhile: each transaction costs the broker a marker in every partition it wrote to and a few
round trips, so fewer, larger ones cost less (Kafka Streams commits every 100 ms in its
exactly-once mode), at the price of outputs becoming visible up to that much later.

The sequence table's changelog records are the exception: they go out just before the
transaction, through the worker's plain producer, and the transaction waits until the broker
has them. Inside a transaction they would end each changelog partition with a commit marker,
which Faust's table recovery never reads past (it waits for the consumer to reach the
partition's last offset, and a marker is never delivered; its workaround runs only in Faust's
own exactly-once mode), so a restarted worker would never start. Outside it, a crash can leave
states of events whose transaction was aborted; those events are delivered again, and
replaying an event onto a state that already holds it changes nothing (an event_id is never
inserted twice, and each event is scored on the sequence up to itself).

Fencing is one transactional id per input partition number (``<app id>-eos-<n>``; the
``events`` and ``sequences.expire`` partitions of that number are always assigned together).
Whoever takes partition n next starts a producer with that id, which aborts the open
transaction of a killed owner at once and fences a stale one: aiokafka has no consumer-group
metadata fencing (KIP-447). A fenced or failed transaction makes the worker exit for a restart
(``on_failure``); nothing of it was visible, and its messages are delivered again.

Faust must not commit these partitions' offsets itself (a late commit of its own could move
the group's offset back behind a transaction), so ``transactional_topics`` on the app tells
the consumer to skip them (workers/kafka/faust_compat.py). Faust still hears of every
message, through its ack, once the transaction holding it has committed.

Trends and the idle-user sweep are not message outputs and stay at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from schemas.settings import Settings
from workers.kafka.publisher import Publisher, Record
from workers.pipeline.acks import Slot

log = logging.getLogger(__name__)


@dataclass
class _Partition:
    """What waits for one input partition number's next transaction."""

    number: int
    publisher: Publisher
    outputs: dict[str, list[Record]] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)
    committed: asyncio.Future = field(  # the next commit's
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: asyncio.Task | None = None
    started: bool = False
    closing: bool = False
    began: float = 0.0  # time.monotonic() when its latest transaction began

    def take(self, slot: Slot) -> None:
        for topic, record in slot.outputs or ():
            self.outputs.setdefault(topic, []).append(record)
        slot.outputs = None
        message = slot.event.message
        self.offsets[TopicPartition(message.topic, message.partition)] = message.offset + 1
        self.slots.append(slot)

    def drain(self) -> tuple[dict[str, list[Record]], dict, list[Slot], asyncio.Future]:
        """Everything finished so far, and the future of the commit that takes it."""
        taken = self.outputs, self.offsets, self.slots, self.committed
        self.outputs, self.offsets, self.slots = {}, {}, []
        self.committed = asyncio.get_running_loop().create_future()
        return taken


class Transactions:
    """The transactional producers of the partitions this worker holds, and their commits."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        generation: Callable[[], int],
        on_failure: Callable[[BaseException], None],
        plain: Publisher | None = None,
        changelog_topic: str = "",
        on_changelog: Callable[[asyncio.Future], object] | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self._generation = generation
        self._on_failure = on_failure
        self._plain = plain  # the worker's producer, for the changelog (None: unit tests only)
        self._changelog_topic = changelog_topic
        self._on_changelog = on_changelog
        self._partitions: dict[int, _Partition] = {}

    def transactional_id(self, number: int) -> str:
        return f"{self.settings.app_id}-eos-{number}"

    def release(self, slot: Slot) -> None:
        """OrderedAcks' ``release``: ``slot`` and everything before it in its line are
        finished; its outputs join its partition's next transaction."""
        part = self._partition(slot.event.message.partition)
        part.take(slot)
        if part.task is None or part.task.done():
            part.task = asyncio.create_task(self._commit_loop(part))

    def committed(self, slots: Iterable[Slot]) -> asyncio.Future:
        """Done once the outputs of ``slots`` (released already) are committed, or dropped
        because their partition was taken away (then at once: a slot of a revoked partition
        is never released, and must not hold a batch's place in flight)."""
        numbers = {slot.event.message.partition for slot in slots}
        parts = [self._partitions[n] for n in numbers if n in self._partitions]
        return asyncio.gather(*(part.committed for part in parts))

    def _partition(self, number: int) -> _Partition:
        part = self._partitions.get(number)
        if part is None:
            publisher = Publisher(
                self.settings,
                on_failure=self._on_failure,
                transactional_id=self.transactional_id(number),
            )
            part = self._partitions[number] = _Partition(number, publisher)
        return part

    async def _commit_loop(self, part: _Partition) -> None:
        """Commit what is finished, again and again, until nothing is left."""
        try:
            if not part.started:
                part.started = True
                await part.publisher.start()
            interval = self.settings.transaction_interval_ms / 1000
            while part.slots and not part.closing:
                await asyncio.sleep(part.began + interval - time.monotonic())
                if part.closing:
                    break
                part.began = time.monotonic()
                outputs, offsets, slots, committed = part.drain()
                await self._send_changelog(outputs.pop(self._changelog_topic, []))
                await part.publisher.commit_transaction(outputs, offsets, self.group_id)
                generation = self._generation()
                for slot in slots:
                    if slot.event.message.generation_id == generation:
                        slot.event.ack()
                committed.set_result(None)
        except Exception as exc:
            log.critical(
                "partition %d: transaction %s failed (%s: %s)",
                part.number,
                part.publisher.transactional_id,
                type(exc).__name__,
                exc,
            )
            part.publisher.fail(exc)

    async def _send_changelog(self, records: list[Record]) -> None:
        """Put the changelog states on the broker before the transaction (module docstring)."""
        if not records or self._plain is None:
            return
        futures = await self._plain.send_many(self._changelog_topic, records)
        await asyncio.gather(*futures)
        if self._on_changelog is not None:
            for future in futures:
                self._on_changelog(future)

    async def revoke(self, partitions: Iterable[Any]) -> None:
        """Partitions taken away (``on_partitions_revoked``): let a transaction in progress
        end, drop what had not reached one (the new owner handles those messages again) and
        close the producers, so that the new owner's fences nothing that is still working."""
        numbers = {tp.partition for tp in partitions}
        for number in numbers:
            part = self._partitions.pop(number, None)
            if part is not None:
                await self._close(part)

    async def stop(self) -> None:
        """After the stream has stopped and every message it took is acked."""
        for number in list(self._partitions):
            await self._close(self._partitions.pop(number))

    async def _close(self, part: _Partition) -> None:
        part.closing = True
        if part.task is not None:
            await asyncio.gather(part.task, return_exceptions=True)
        if not part.committed.done():
            part.committed.set_result(None)
        await part.publisher.stop()
