"""The ingest agent: each consumed message becomes a Job in a micro-batch or a DLQ record.

Faust acks a message when an agent raises or a value fails to deserialize, so the agent reads
raw bytes with manual acks: every message is either dead-lettered (and acked once the DLQ
record is on the broker) or scored (and acked once its prediction and the sequence it changed
are on the broker, or committed in exactly-once mode). Offsets are committed only up to the
lowest unacked message, so a crash loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import InvalidRecord, decode_event
from schemas.records import Event
from schemas.settings import Settings
from workers import metrics
from workers.kafka import faust_compat
from workers.pipeline.acks import OrderedAcks, Slot
from workers.pipeline.batcher import MicroBatcher
from workers.pipeline.dead_letters import reason
from workers.pipeline.expiry import Expiry
from workers.pipeline.outbox import Outbox, Output
from workers.pipeline.sequence import SeqEvent, UserSequence, seq_event
from workers.pipeline.sequence_store import SequenceStore

log = logging.getLogger(__name__)
CPU_SAMPLE_EVERY = 16
"""Ingest's CPU time (``foresight_loop_cpu_seconds_total{part="ingest"}``) is read around
one event in this many. A thread's CPU clock is a system call, not a vDSO read like the wall
clock: 0.8 µs of CPU a read on this VM with both cores busy, and two reads an event cost
about 1.6 µs of the event loop's ~70-100. The estimate runs a little high: in turns with every
event timed, ingest came to 22-24% of the loop against 20-21% (the timed event also pays for
the system call's aftermath, counted 16 times)."""


@dataclass(slots=True)
class Job:
    """One valid event waiting to be scored, with the sequence it is scored on."""

    slot: Slot  # the consumed message and its place in the ack order
    record: Event
    prefix: list[SeqEvent]  # the user's events up to and including this one
    encoded: bytes  # the prefix in the table's encoding, as the scoring process reads it
    produced_at: float  # Kafka record timestamp, epoch seconds (Faust converts from ms)
    sequence_after: bytes  # the user's stored sequence after this event, for the changelog
    ingested_at: float = field(default_factory=time.time)  # epoch seconds, for stage timings

    def latency(self, now: float) -> float:
        """Seconds from the event's production to ``now`` (0 for a record without a time)."""
        return max(0.0, now - self.produced_at) if self.produced_at else 0.0


@dataclass
class Ingest:
    """Decode, validate and sequence each event; hand valid ones to the batcher."""

    settings: Settings
    store: SequenceStore
    acks: OrderedAcks
    outbox: Outbox
    expiry: Expiry
    batcher: MicroBatcher[Job]
    prepared: int = 0  # events prepared so far, to sample their CPU time

    async def consume(self, stream) -> None:
        """The agent. Every message ends either in a batch or on the DLQ with its stage and
        reason: a failure while handling one message never stops its partition."""
        expire_topic = self.settings.topic("sequences.expire")
        async for event in stream.noack().events():
            message = event.message
            slot = self.acks.track(event)
            if slot is None:  # a second copy: Faust must stop waiting for its ack
                faust_compat.forget_unacked(stream.app.consumer, message)
                continue
            try:
                if message.topic == expire_topic:
                    changelog = self.store.changelog_topic
                    expired = self.expiry.expire(message.key, message.partition)
                    await self.outbox.emit([slot], [Output(slot, changelog, r) for r in expired])
                    continue
                metrics.EVENTS_IN.inc()
                self.prepared += 1
                if self.prepared % CPU_SAMPLE_EVERY:
                    job = self.prepare(slot)
                else:  # this one's CPU time stands for the events since the last sample
                    began = time.thread_time()
                    job = self.prepare(slot)
                    metrics.INGEST_CPU.inc((time.thread_time() - began) * CPU_SAMPLE_EVERY)
            except InvalidRecord as exc:
                await self.outbox.reject(slot, exc.stage, str(exc))
                continue
            except Exception as exc:  # a bug, not the input's fault: still never a stall
                log.exception("handling %s failed", message.tp)
                await self.outbox.reject(slot, "state", reason(exc))
                continue
            await self.batcher.submit(job)

    def prepare(self, slot: Slot) -> Job:
        """Decode, validate and add one event to its user's sequence; the Job to score.

        Raises InvalidRecord (stage decode, validate or state). An event the sequence table
        cannot hold leaves the user's stored and cached sequence exactly as they were: the
        store is written last, and the cached copy, which may be half-changed, is dropped."""
        message = slot.event.message
        record = decode_event(message.value)
        key = record.user_id.encode()
        if message.key != key:  # a user's events must share one partition (and one worker)
            why = f"message key {message.key!r} is not the event's user_id {record.user_id!r}"
            raise InvalidRecord("validate", why)
        try:
            seq = self.store.load(key)
            current = seq_event(record)
            seq.insert(current, self.settings.window_seconds, self.settings.max_sequence_length)
            seq.updated_at = time.time()
            value = seq.to_bytes()
            prefix = seq.upto(record.event_id)
            if len(prefix) == len(seq.events):  # the usual case: the newest event
                encoded = value
            elif prefix:  # a late event: scored on what came before it
                encoded = seq.prefix_bytes(len(prefix))
            else:  # older than the window: scored alone
                prefix = [current]
                encoded = UserSequence(prefix).to_bytes()
            self.store.save(key, value, seq)  # the store only: the changelog goes with the batch
        except Exception as exc:
            self.store.forget(key)
            raise InvalidRecord("state", reason(exc)) from exc
        return Job(slot, record, prefix, encoded, message.timestamp or 0.0, value)


def caught_up(app: Any, batch_size: int) -> Callable[[Job], bool]:
    """The batcher's test of whether the worker keeps up: fewer than a batch of events wait
    behind a job in its partition, by the consumer's latest high-water mark. Behind more,
    batches fill (workers/pipeline/batcher.py). ``app`` is the Faust app, whose consumer is
    read when asked: it is made after the worker is built."""

    def less_than_a_batch_behind(job: Job) -> bool:
        message = job.slot.event.message
        highwater = app.consumer.highwater(message.tp)
        return highwater is None or highwater - message.offset - 1 < batch_size

    return less_than_a_batch_behind
