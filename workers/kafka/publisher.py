"""The worker's output producer: a micro-batch of records becomes one Kafka batch per partition.

Sending record by record through Faust costs a future, a partitioner call, a buffer round trip
and a debug log line per prediction and per changelog write; profiled, that was a third of the
event loop. Here a batch of outputs is appended to one ``BatchBuilder`` per partition (aiokafka's
C record builder) and gets one delivery future per partition. Keys are partitioned exactly as
Kafka's default partitioner does (murmur2), so a user's records land where a plain producer
would put them.

A record the broker does not take is retried in place by the producer: aiokafka keeps one
request in flight per broker and puts a failed batch back at the head of its partition's queue,
so retries keep the order per partition. It does so until the batch is older than its request
timeout, which is therefore ``publish_timeout_seconds``. After that nothing can be published in
order any more, so the first failed delivery calls ``on_failure`` (the worker exits for a
restart) instead of leaving a silent gap in front of the commit point.

With a ``transactional_id`` the same publisher commits records and consumer offsets in Kafka
transactions (exactly-once mode, workers/pipeline/transactions.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import NamedTuple

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidProducerEpoch,
    InvalidTxnState,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings
from workers.shutdown import exit_now

log = logging.getLogger(__name__)
Headers = list[tuple[str, bytes]]
RETRY_BACKOFF_MS = 250  # between retries of a batch the broker did not take
TRANSACTION_TIMEOUT_MS = 30_000
EXIT_CANNOT_PUBLISH = 75  # EX_TEMPFAIL: restart me; nothing unpublished was committed


class Record(NamedTuple):
    """One output record; ``partition`` None means "by key"."""

    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int | None = None


class Publisher:
    """Owns one producer (acks=all) for every output of the worker: predictions, alerts,
    trends, DLQ and the sequence table's changelog, so their order per partition is the
    order they were sent in."""

    def __init__(
        self,
        settings: Settings,
        on_failure: Callable[[BaseException], None],
        linger_ms: int = 5,
        max_batch_bytes: int = 256 * 1024,
        transactional_id: str | None = None,
    ):
        self.settings = settings
        self.on_failure = on_failure  # called once, with the first failure
        self.linger_ms = linger_ms
        self.max_batch_bytes = max_batch_bytes
        self.transactional_id = transactional_id  # None: no transactions (at-least-once)
        self._producer: AIOKafkaProducer | None = None
        self._started = asyncio.Event()
        self._failed = False

    async def start(self) -> None:
        """Connect (aiokafka producers must be created inside the running loop)."""
        self._producer = AIOKafkaProducer(
            **aiokafka_kwargs(self.settings),
            client_id=f"{self.settings.app_id}-outputs",
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=self.max_batch_bytes,
            request_timeout_ms=int(self.settings.publish_timeout_seconds * 1000),
            retry_backoff_ms=RETRY_BACKOFF_MS,
            **self._transactional(),
        )
        await self._producer.start()  # with a transactional id: fences its previous holder
        self._started.set()

    def _transactional(self) -> dict:
        if self.transactional_id is None:
            return {}
        return {
            "transactional_id": self.transactional_id,
            "enable_idempotence": True,
            # an open transaction of a worker killed before the next owner of its partition
            # takes over holds back read_committed readers this long at most
            "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        }

    @property
    def started(self) -> bool:
        return self._started.is_set()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def commit_transaction(
        self, outputs: dict[str, list[Record]], offsets: dict[TopicPartition, int], group_id: str
    ) -> list[asyncio.Future]:
        """In one transaction: ``outputs`` (topic → records) and the consumer group's
        ``offsets`` (the next offset to read of each input partition). Returns once the
        transaction is committed (with the records' delivery futures, all done); raises if it
        cannot be, and then nothing of it is visible to a read_committed reader."""
        producer = await self._ready()
        await producer.begin_transaction()
        futures: list[asyncio.Future] = []
        for topic, records in outputs.items():
            futures += await self.send_many(topic, records)
        await asyncio.gather(*futures)
        await producer.send_offsets_to_transaction(offsets, group_id)
        await producer.commit_transaction()
        return futures

    async def _ready(self) -> AIOKafkaProducer:
        await self._started.wait()  # timers and agents may fire before the app's services
        assert self._producer is not None
        return self._producer

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> asyncio.Future:
        """Queue one record; returns its delivery future."""
        producer = await self._ready()
        with self._fatal_errors():
            future = await producer.send(
                topic, value, key=key, headers=headers, partition=partition
            )
        return self._watched(future)

    async def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic``, in order."""
        producer = await self._ready()
        return sorted(await producer.partitions_for(topic))  # cached metadata

    async def partitioner(self, topic: str) -> Callable[[bytes | None], int]:
        """key → the partition of ``topic`` a keyed record would go to."""
        partitions = await self.partitions(topic)
        return lambda key: partitions[_hash_slot(key, len(partitions))]

    async def send_many(self, topic: str, records: Iterable[Record]) -> list[asyncio.Future]:
        """Queue many records, one batch per partition; returns the batches' delivery futures
        (every record is on the broker once all of them are done)."""
        producer = await self._ready()
        partition_of = await self.partitioner(topic)
        builders: dict[int, BatchBuilder] = {}
        futures: list[asyncio.Future] = []
        for record in records:
            partition = record.partition
            if partition is None:
                partition = partition_of(record.key)
            builder = builders.get(partition)
            if builder is None or not _append(builder, record):
                if builder is not None:  # full: send it, start the next one
                    futures.append(await self._send_batch(producer, builder, topic, partition))
                builder = builders[partition] = producer.create_batch()
                if not _append(builder, record):  # larger than a batch: it goes on its own
                    key, value, headers = record.key, record.value, record.headers
                    futures.append(await self.send(topic, key, value, headers, partition))
        for partition, builder in builders.items():
            futures.append(await self._send_batch(producer, builder, topic, partition))
        return futures

    async def _send_batch(
        self, producer: AIOKafkaProducer, builder: BatchBuilder, topic: str, partition: int
    ) -> asyncio.Future:
        with self._fatal_errors():
            future = await producer.send_batch(builder, topic, partition=partition)
        return self._watched(future)

    @contextmanager
    def _fatal_errors(self) -> Iterator[None]:
        """A client error while queueing (the buffer stayed full for the whole timeout, the
        producer is closed, a record over the request size) is as final as a failed delivery."""
        try:
            yield
        except KafkaError as exc:
            self.fail(exc)
            raise

    def _watched(self, future: asyncio.Future) -> asyncio.Future:
        future.add_done_callback(self._delivered)
        return future

    def _delivered(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return  # the producer is stopping
        if (exc := future.exception()) is not None:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Give up: outputs can no longer be published in order (called once, however often
        it is called)."""
        if not self._failed:
            self._failed = True
            self.on_failure(exc)


def exit_for_restart(timeout: float, exc: BaseException) -> None:
    """The worker's ``on_failure``: an output could not be published, so exit at once.

    Whatever is not on the broker was never acked, so the committed offsets stand before it and
    a restarted worker (or the partition's next owner) redelivers it; nothing is lost. Carrying
    on would leave a gap that freezes the commit point, and a graceful stop would wait on the
    same broker, so the exit is immediate and says why, with a code that asks for a restart."""
    log.critical(
        "%s; exiting with code %d for a restart: nothing unpublished was committed, so it will "
        "be redelivered",
        why_publishing_stopped(timeout, exc),
        EXIT_CANNOT_PUBLISH,
    )
    exit_now(EXIT_CANNOT_PUBLISH)


def why_publishing_stopped(timeout: float, exc: BaseException) -> str:
    """What an operator should read about a failed output.

    aiokafka wraps an error its sender did not expect (an ``InvalidTxnState`` in the middle of
    a transaction, say) in a bare "Unexpected error during batch delivery", so the reason is
    looked for along the whole chain of causes, and the deepest one is named."""
    chain = _causes(exc)
    named = _named(exc) if len(chain) == 1 else f"{_named(exc)}; caused by {_named(chain[-1])}"
    if _any(chain, TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
        return (
            f"the broker does not authorize this worker's user to write an output ({named}); "
            "grant it WRITE and DESCRIBE on the output topics"
        )
    if _any(chain, TransactionalIdAuthorizationFailed):
        return (
            f"the broker does not authorize this worker's user to use its transactional ids "
            f"({named}); grant it WRITE and DESCRIBE on TransactionalId '<app id>-eos-' (prefixed)"
        )
    if _any(chain, ProducerFenced, InvalidProducerEpoch):
        return (
            "another worker has taken over one of this worker's partitions and fenced its "
            f"transactional producer ({named})"
        )
    if _any(chain, InvalidTxnState):
        return (
            "the broker no longer holds this worker's transaction open: another worker has "
            "most likely taken over the partition and fenced it, or the transaction outlived "
            f"its {TRANSACTION_TIMEOUT_MS / 1000:.0f} s timeout ({named})"
        )
    if _any(chain, KafkaTimeoutError, RequestTimedOutError):
        return f"the broker has not taken an output for {timeout:.0f} s ({named})"
    return f"the producer failed ({named})"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what raised it, outermost first (``raise ... from``, or raised while
    handling)."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    return chain


def _named(exc: BaseException) -> str:
    """``Type: message`` once (aiokafka's errors already start their message with the type)."""
    text, kind = str(exc), type(exc).__name__
    return text if text.startswith(kind) else f"{kind}: {text}"


def _any(chain: list[BaseException], *kinds: type[BaseException]) -> bool:
    return any(isinstance(e, kinds) for e in chain)


def _hash_slot(key: bytes | None, count: int) -> int:
    """Kafka's default partitioner: murmur2 of the key, a random partition without one."""
    return random.randrange(count) if key is None else _murmur2_slot(key, count)


@lru_cache(maxsize=100_000)
def _murmur2_slot(key: bytes, count: int) -> int:
    """aiokafka's murmur2 is pure Python, and the same users come back batch after batch."""
    return (murmur2(key) & 0x7FFFFFFF) % count


def _append(builder: BatchBuilder, record: Record) -> bool:
    """False when the batch is full."""
    appended = builder.append(
        timestamp=None, key=record.key, value=record.value, headers=record.headers or []
    )
    return appended is not None
