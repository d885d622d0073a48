"""The Faust app: consume events, keep per-user sequences, score in micro-batches, publish.

Faust acks a message when an agent raises or a value fails to deserialize, so this agent reads
raw bytes with manual acks: every message is either dead-lettered (and acked once the DLQ
record is on the broker) or scored (and acked once its prediction and the sequence it changed
are on the broker). Offsets are committed only up to the lowest unacked message, so a crash
loses nothing.

The sequence table is written to its store as each event arrives, but its changelog records
go out with the batch's predictions, one per user per batch, through the same batched
producer (see workers/publisher.py): per-record sends were the largest cost of the hot path.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from mode import Service

from models import registry
from schemas.codec import InvalidRecord, Stage, decode_event
from schemas.kafka_security import faust_credentials
from schemas.records import Event
from schemas.settings import Settings
from workers import metrics
from workers.acks import OrderedAcks, Slot
from workers.batcher import MicroBatcher
from workers.consumer import EagerDeliveryApp
from workers.follower import ModelFollower, ModelHolder
from workers.log_limits import limit_repeats
from workers.outputs import (
    AlertPolicy,
    TrendAccumulator,
    TrendAggregator,
    alert_record,
    event_sentiment,
)
from workers.publisher import Publisher, Record
from workers.scoring import Scorer, Scores
from workers.scoring_process import ScoringFailed, ScoringProcess
from workers.sequence import CorruptSequence, SeqEvent, UserSequence, seq_event

log = logging.getLogger(__name__)
MAX_IN_FLIGHT_BATCHES = 4  # published, waiting for the broker's acks
BATCHES_AT_ONCE = 2  # being scored or published
DECODE_CACHE_USERS = 50_000
PARTIALS_PER_RECORD = 500  # ~100 KB: well under Kafka's 1 MB record limit
# Longer means fewer partials, but each flush is a burst of work that holds up scoring.
TREND_FLUSH_SECONDS = 1.0
GC_YOUNG_THRESHOLD = 50_000  # CPython's default is 700
DLQ_MAX_KEY_BYTES = 64 * 1024
DLQ_MAX_VALUE_BYTES = 512 * 1024  # inputs over 64 KiB are refused at decode anyway
EXIT_CANNOT_PUBLISH = 75  # EX_TEMPFAIL: restart me; nothing unpublished was committed


@dataclass(slots=True)
class Job:
    """One valid event waiting to be scored, with the sequence it is scored on."""

    slot: Slot  # the consumed message and its place in the ack order
    record: Event
    prefix: list[SeqEvent]
    encoded: bytes  # the prefix in the table's encoding, as the scoring process reads it
    produced_at: float  # Kafka record timestamp, epoch seconds (Faust converts from ms)
    state: bytes  # the user's sequence after this event, for the changelog


class Failure(NamedTuple):
    """A job that goes to the DLQ instead of being predicted, and why."""

    job: Job
    stage: Stage
    reason: str


class _Rows:
    """A batch's scores as Python lists, converted once per batch rather than per event."""

    def __init__(self, scores: Scores, scorer: Scorer) -> None:
        self.version, self.types = scorer.version, scorer.event_types
        self.next_action = scores.next_action.tolist()
        self.top_items = scores.top_items
        self.top_scores = scores.top_scores.tolist()
        self.risk, self.surprise = scores.risk.tolist(), scores.surprise.tolist()


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def dlq_record(message, stage: Stage, error: str) -> Record:
    """The DLQ record of a failed message: its original key and bytes, and Connect-style
    headers that say where and why it failed.

    A message at the broker's size limit would be refused on the DLQ too (the headers make it
    larger), and a refusal there would stop the partition, so a key over 64 KiB or a value over
    512 KiB is cut, with its original size in a ``dlq.key|value.truncated.from`` header;
    ``dlq.source.*`` still locate the whole original."""
    headers = [
        ("dlq.stage", stage.encode()),
        ("dlq.error", error[:1000].encode()),
        ("dlq.source.topic", message.topic.encode()),
        ("dlq.source.partition", str(message.partition).encode()),
        ("dlq.source.offset", str(message.offset).encode()),
        ("dlq.ts", f"{time.time():.3f}".encode()),
    ]
    key, value = message.key, message.value
    for name, original, limit in (
        ("key", key, DLQ_MAX_KEY_BYTES),
        ("value", value, DLQ_MAX_VALUE_BYTES),
    ):
        if original is not None and len(original) > limit:
            headers.append((f"dlq.{name}.truncated.from", str(len(original)).encode()))
    return Record(
        None if key is None else key[:DLQ_MAX_KEY_BYTES],
        None if value is None else value[:DLQ_MAX_VALUE_BYTES],
        headers,
    )


class Foresight:
    """The worker: a Faust app plus the scoring machinery around it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self.app = EagerDeliveryApp(
            s.app_id,
            broker=s.broker,
            broker_credentials=faust_credentials(s),
            store=s.store,
            datadir=str(s.data_dir),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            web_enabled=False,
            autodiscover=False,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            broker_commit_interval=1.0,
            stream_buffer_maxsize=4 * s.batch_size,
            table_standby_replicas=1,
        )
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.events_topic = self.app.topic(s.topic("events"), s.topic("sequences.expire"), **raw)
        self.partial_topic = self.app.topic(s.topic("trends.partial"), **raw)
        self.control_topic = s.topic("models.control")
        self.sequences = self.app.Table(
            "sequences", default=None, key_type=bytes, value_type=bytes, partitions=s.partitions
        )
        self.changelog_topic = self.sequences.changelog_topic.get_topic_name()
        give_up = functools.partial(_exit_for_restart, s.publish_timeout_seconds)
        self.publisher = Publisher(s, on_failure=give_up)
        self.holder = ModelHolder()
        self.scoring_process = ScoringProcess()
        self.follower = ModelFollower(s, self.holder, self.scoring_process)
        self.alerts = AlertPolicy(
            s.risk_threshold,
            s.surprise_threshold,
            s.alert_cooldown_seconds,
            anomaly_enabled=s.anomaly_alerts,
        )
        self.trend_parts = TrendAccumulator(s.trend_window_seconds)
        self.trends = TrendAggregator(s.trend_window_seconds)
        self.batcher: MicroBatcher[Job] = MicroBatcher(
            self.score_batch, s.batch_size, s.batch_max_wait_ms, concurrency=BATCHES_AT_ONCE
        )
        self._publish_turn: asyncio.Future  # done once the latest batch has published
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT_BATCHES)
        self.newest_window = 0.0
        self.acks = OrderedAcks(lambda: self.app.consumer_generation_id, self._committed)
        self._decoded: OrderedDict[bytes, tuple[bytes, UserSequence]] = OrderedDict()
        self._wire()

    # --- wiring --------------------------------------------------------------------------------
    def _wire(self) -> None:
        app = self.app
        app.agent(self.events_topic, name="ingest")(self.ingest)
        app.agent(self.partial_topic, name="trends")(self.merge_trends)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        app.timer(TREND_FLUSH_SECONDS)(self.flush_trends)
        app.timer(self.settings.sweep_interval_seconds)(self.sweep)
        app.timer(5.0)(self.report_lag)
        # An instance, not a class: Faust starts and stops it with the app (see
        # App._prepare_subservice), though its type hints only mention classes.
        app._extra_services.append(_Scoring(self))  # type: ignore[arg-type]

    async def start_scoring(self) -> None:
        """Load the current model (models.control, else the registry's CURRENT), then batch."""
        for noisy in ("aiokafka", "faust.transport"):  # debug records cost ~3% of the hot path
            if logging.getLogger(noisy).getEffectiveLevel() < logging.INFO:
                logging.getLogger(noisy).setLevel(logging.INFO)
        limit_repeats()
        metrics.serve(self.settings.metrics_port)
        await self.publisher.start()
        await self.scoring_process.start()
        await self.follower.start(self.load_initial())
        self._publish_turn = asyncio.get_running_loop().create_future()
        self._publish_turn.set_result(None)
        self.batcher.start()
        _tune_gc()

    async def stop_scoring(self) -> None:
        await self.batcher.stop()
        await self.follower.stop()
        await self.publisher.stop()
        await self.scoring_process.stop()

    def load_initial(self) -> Path | None:
        version = registry.current(self.settings.registry)
        return self.settings.registry / version if version else None

    # --- the hot path --------------------------------------------------------------------------
    async def ingest(self, stream) -> None:
        """Every message ends either in a batch or on the DLQ with its stage and reason: a
        failure while handling one message never stops its partition."""
        expire_topic = self.settings.topic("sequences.expire")
        async for event in stream.noack().events():
            message = event.message
            slot = self.acks.track(event)
            if slot is None:
                self._ignore(message)
                continue
            try:
                if message.topic == expire_topic:
                    expired = await self._expire(message.key, message.partition)
                    self._ack_when_delivered([slot], expired)
                    continue
                metrics.EVENTS_IN.inc()
                job = self.prepare(slot)
            except InvalidRecord as exc:
                await self.reject(slot, exc.stage, str(exc))
                continue
            except Exception as exc:  # a bug, not the input's fault: still never a stall
                log.exception("handling %s failed", message.tp)
                await self.reject(slot, "state", _reason(exc))
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
            reason = f"message key {message.key!r} is not the event's user_id {record.user_id!r}"
            raise InvalidRecord("validate", reason)
        try:
            seq = self._sequence(key)
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
            self.sequences.data[key] = value  # the store only: the changelog goes with the batch
        except Exception as exc:
            self._decoded.pop(key, None)
            raise InvalidRecord("state", _reason(exc)) from exc
        self._remember(key, value, seq)
        return Job(slot, record, prefix, encoded, message.timestamp or 0.0, value)

    def _committed(self, tp) -> int | None:
        """The offset Faust committed (and sought to) for ``tp``; None for none or 0."""
        consumer: Any = self.app.consumer
        return consumer._committed_offset.get(tp)

    def _ignore(self, message) -> None:
        """A second copy of a message already taken: Faust must stop waiting for its ack,
        which would hold up the next rebalance."""
        consumer: Any = self.app.consumer
        consumer._unacked_messages.discard(message)

    def _sequence(self, key: bytes) -> UserSequence:
        """The user's sequence: decoded from the table, or reused from the decode cache when
        the table still holds exactly the bytes we decoded last time."""
        stored = self.sequences.data.get(key)
        cached = self._decoded.get(key)
        if cached is not None and stored is not None and cached[0] == stored:
            self._decoded.move_to_end(key)
            return cached[1]
        try:
            return UserSequence.from_bytes(stored)
        except CorruptSequence as exc:
            # Derived state that cannot be read (format-1 values corrupted by the one-byte id
            # length bug): refusing this user's events for good would stop them, so the
            # sequence starts afresh, loudly.
            log.warning("user %r: stored sequence unreadable (%s); starting it afresh", key, exc)
            metrics.SEQUENCE_RESETS.inc()
            return UserSequence()

    def _remember(self, key: bytes, value: bytes, seq: UserSequence) -> None:
        self._decoded[key] = (value, seq)
        self._decoded.move_to_end(key)
        if len(self._decoded) > DECODE_CACHE_USERS:
            self._decoded.popitem(last=False)

    async def send(self, base: str, key: bytes | None, value: bytes | None, headers=None):
        """Queue one record on the topic named ``base``; returns its delivery future."""
        return await self.publisher.send(self.settings.topic(base), key, value, headers)

    async def reject(self, slot: Slot, stage: Stage, error: str) -> None:
        """One DLQ record per failed message (original key and bytes, reason in headers);
        the message is acked once that record is on the broker."""
        self._ack_when_delivered([slot], [await self._dead_letter(slot, stage, error)])

    async def _dead_letter(self, slot: Slot, stage: Stage, error: str) -> asyncio.Future:
        """Queue the DLQ record of one message; returns its delivery future."""
        metrics.DLQ.labels(stage).inc()
        record = dlq_record(slot.event.message, stage, error)
        return await self.send("events.dlq", record.key, record.value, record.headers)

    async def score_batch(self, jobs: list[Job]) -> None:
        """Score one batch off the event loop, publish, and ack once the broker has it all.

        Two batches are handled at once (the scoring process works on one while the loop
        publishes the other), so each batch waits for its predecessor's turn to publish:
        a user's predictions and changelog states stay in order across batches."""
        previous, turn = self._publish_turn, asyncio.get_running_loop().create_future()
        self._publish_turn = turn
        try:
            await self._score_and_publish(jobs, previous)
        finally:
            turn.set_result(None)

    async def _score_and_publish(self, jobs: list[Job], previous: asyncio.Future) -> None:
        scorer = await self.holder.wait()  # read once: a swap lands between batches only
        metrics.BATCH_SIZE.observe(len(jobs))
        scored, scores, failed = await self._score_isolating(scorer, jobs)
        if failed:
            first = failed[0].reason
            log.warning("%d of %d sequences could not be scored: %s", len(failed), len(jobs), first)
        await previous
        await self.in_flight.acquire()
        try:
            futures, predicted = await self.publish(jobs, scored, scores, failed, scorer)
        except Exception as exc:  # outputs that cannot be queued: the worker cannot go on
            self.in_flight.release()
            self.publisher.fail(exc)
            raise
        slots = [j.slot for j in jobs]
        delivered = self._ack_when_delivered(slots, futures, scored=predicted)
        delivered.add_done_callback(lambda _: self.in_flight.release())

    async def _score_isolating(
        self, scorer: Scorer, jobs: list[Job]
    ) -> tuple[list[Job], Scores | None, list[Failure]]:
        """Scores for the jobs that can be scored, and a Failure for each that cannot: a batch
        the model raises on is split in halves until each failing sequence is alone, so one
        bad sequence costs about 2·log2(batch) extra calls, not its neighbours' predictions.
        (A scoring process that cannot stay up fails the whole batch: bisecting would restart
        it hundreds of times for nothing.)"""
        try:
            return jobs, await scorer.score([j.encoded for j in jobs]), []
        except ScoringFailed as exc:  # the model raised on something in this batch
            if len(jobs) == 1:
                return [], None, [Failure(jobs[0], "score", _reason(exc))]
        except Exception as exc:
            log.exception("the scoring process failed")
            return [], None, [Failure(job, "score", _reason(exc)) for job in jobs]
        half = len(jobs) // 2
        parts = [await self._score_isolating(scorer, part) for part in (jobs[:half], jobs[half:])]
        scored = [job for part in parts for job in part[0]]
        scores = [part[1] for part in parts if part[1] is not None]
        return scored, Scores.concat(scores) if scores else None, parts[0][2] + parts[1][2]

    async def publish(
        self,
        jobs: list[Job],
        scored: list[Job],
        scores: Scores | None,
        failed: list[Failure],
        scorer: Scorer,
    ) -> tuple[list[asyncio.Future], int]:
        """Queue the batch's changelog records (every job's: each event is in its user's
        stored sequence, scored or not), the scored jobs' predictions and alerts, and a DLQ
        record for each job that failed; returns the futures that say they are all on the
        broker, and how many predictions there are."""
        now = time.time()
        predictions: list[Record] = []
        alerts: list[Record] = []
        failed = list(failed)
        if scores is not None:
            rows = _Rows(scores, scorer)
            for i, job in enumerate(scored):
                try:  # one job's outputs: if they cannot be built, the job alone is dead-lettered
                    prediction, job_alerts = self._outputs(job, rows, i, now)
                except Exception as exc:
                    log.exception("building the outputs of %s failed", job.record.event_id)
                    failed.append(Failure(job, "publish", _reason(exc)))
                    continue
                predictions.append(prediction)
                alerts += job_alerts
        states: dict[bytes | None, Record] = {}  # the last state per user in this batch wins
        for job in jobs:
            message = job.slot.event.message
            states[message.key] = Record(message.key, job.state, None, message.partition)
        publish = self.publisher.send_many
        futures = await publish(self.changelog_topic, states.values())
        for future in futures:
            future.add_done_callback(self._changelog_persisted)
        if predictions:
            futures += await publish(self.settings.topic("predictions"), predictions)
        if alerts:
            futures += await publish(self.settings.topic("alerts"), alerts)
        for failure in failed:
            futures.append(await self._dead_letter(failure.job.slot, failure.stage, failure.reason))
        return futures, len(predictions)

    def _outputs(self, job: Job, rows: _Rows, i: int, now: float) -> tuple[Record, list[Record]]:
        """One scored job's prediction and alerts; adds its trend partial."""
        r = job.record
        key = job.slot.event.message.key
        latency_ms = max(0.0, (now - job.produced_at) * 1000.0) if job.produced_at else 0.0
        risk, surprise = rows.risk[i], rows.surprise[i]
        value = orjson.dumps(
            {
                "event_id": r.event_id,
                "user_id": r.user_id,
                "model_version": rows.version,
                "ts": r.ts,
                "next_action": dict(zip(rows.types, rows.next_action[i], strict=True)),
                "top_items": [
                    {"item_id": item, "score": sc}
                    for item, sc in zip(rows.top_items[i], rows.top_scores[i], strict=True)
                ],
                "risk": risk,
                "surprise": surprise,
                "sequence_length": len(job.prefix),
                "latency_ms": latency_ms,
            }
        )
        alerts = []
        for kind, score, threshold in self.alerts.decide(r.user_id, risk, surprise, now):
            metrics.ALERTS.labels(kind).inc()
            alert = alert_record(
                kind, score, threshold, r.user_id, r.event_id, job.prefix[-5:], rows.version, now
            )
            alerts.append(Record(key, orjson.dumps(alert)))
        self.trend_parts.add(
            r.item_id, _category(r), r.type.value, r.ts, event_sentiment(r.rating, r.text)
        )
        metrics.END_TO_END.observe(latency_ms / 1000.0)
        return Record(key, value), alerts

    def _changelog_persisted(self, future: asyncio.Future) -> None:
        """Tell the store how far the changelog is on the broker, as Faust's own changelog
        sends do: RocksDB then recovers from there after a restart, not from the start.
        (A batch's first offset: replaying the rest of it again is harmless.)"""
        if not future.cancelled() and future.exception() is None:
            sent = future.result()
            store: Any = self.sequences.data
            store.set_persisted_offset(sent.topic_partition, sent.offset)

    def _ack_when_delivered(
        self, slots: list[Slot], futures: list[asyncio.Future], scored: int = 0
    ) -> asyncio.Future:
        """Ack ``slots`` once every output in ``futures`` is on the broker, without holding
        up the stream meanwhile; returns the future of that delivery."""
        delivered = asyncio.gather(*futures)

        def settle(done: asyncio.Future) -> None:
            if done.cancelled() or done.exception() is not None:
                return  # never acked: the publisher has stopped the worker (see Publisher)
            self.acks.done(*slots)
            metrics.SCORED.inc(scored)

        delivered.add_done_callback(settle)
        return delivered

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """Faust's on_partitions_revoked signal: the revoked partitions come first."""
        self.acks.forget(args[0])

    def _on_rebalance_complete(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """Faust's on_rebalance_complete signal, sent when table recovery is done and just
        before the stream partitions are sought to their committed offsets.

        Recovery runs with the fetcher's flow on (it reads the changelogs), so the fetcher
        can still be handing over a batch of stream messages while that seek happens; its
        read offsets then move past the seek, and Faust drops the messages fetched again
        from the committed offset as already read (faust-streaming #596: the kill -9 test
        lost up to a few hundred events per partition this way). Stopping the flow here
        ends that batch first; Faust resumes the flow itself once the seek is done."""
        self.app.consumer.stop_flow()

    # --- trends ----------------------------------------------------------------------------------
    async def flush_trends(self) -> None:
        """Send this worker's partials to the keys' owners, as one record per partition of
        ``trends.partial`` holding a list (each partial in the partition its key hashes to):
        a Faust message per partial cost about as much as scoring an event."""
        topic = self.settings.topic("trends.partial")
        partition_of = await self.publisher.partitioner(topic)
        groups: dict[int, list[dict]] = {}
        for partial in self.trend_parts.drain():
            groups.setdefault(partition_of(partial["k"].encode()), []).append(partial)
        records = [
            Record(None, orjson.dumps(group[i : i + PARTIALS_PER_RECORD]), None, partition)
            for partition, group in groups.items()
            for i in range(0, len(group), PARTIALS_PER_RECORD)
        ]
        if records:
            await self.publisher.send_many(topic, records)

    async def merge_trends(self, stream) -> None:
        async for raw in stream:
            closed = []
            try:
                for partial in orjson.loads(raw):
                    self.newest_window = max(self.newest_window, partial["w"])
                    closed += self.trends.add(partial)
            except Exception:  # our own record, so a bug: logged, and the stream goes on
                log.exception("a trends.partial record could not be merged")
            await self._send_trends(closed)

    async def _send_trends(self, trends: list[dict]) -> None:
        if trends:
            records = [Record(t["key"].encode(), orjson.dumps(t)) for t in trends]
            await self.publisher.send_many(self.settings.topic("trends"), records)

    # --- housekeeping ----------------------------------------------------------------------------
    async def sweep(self) -> None:
        """Find users idle longer than the inactivity limit and route their expiry to the
        partition that owns them (tables change only inside that partition's stream)."""
        cutoff = time.time() - self.settings.inactivity_expiry_seconds
        count = 0
        for key, value in list(self.sequences.items()):
            count += 1
            if UserSequence.updated_at_of(value) < cutoff:
                await self.send("sequences.expire", key, b"")
        metrics.USERS.set(count)
        self.alerts.prune(time.time())
        await self._send_trends(self.trends.flush(self.newest_window))

    async def _expire(self, key: bytes, partition: int) -> list[asyncio.Future]:
        """Delete a user still idle; returns the delivery of its changelog tombstone, if any."""
        value = self.sequences.data.get(key)
        cutoff = time.time() - self.settings.inactivity_expiry_seconds
        if value is None or UserSequence.updated_at_of(value) >= cutoff:
            return []
        del self.sequences.data[key]
        self._decoded.pop(key, None)
        return [await self.publisher.send(self.changelog_topic, key, None, None, partition)]

    async def report_lag(self) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic != self.settings.topic("events"):
                continue
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
            if highwater is not None and position is not None:
                metrics.LAG.labels(str(tp.partition)).set(max(0, highwater - position))


class _Scoring(Service):
    """Ties the model follower and the batcher to the Faust app's lifecycle."""

    def __init__(self, owner: Foresight) -> None:
        super().__init__()
        self.owner = owner

    async def on_start(self) -> None:
        await self.owner.start_scoring()

    async def on_stop(self) -> None:
        await self.owner.stop_scoring()


def _exit_for_restart(timeout: float, exc: BaseException) -> None:
    """The broker has not taken an output for ``timeout`` seconds: exit at once.

    Whatever is not on the broker was never acked, so the committed offsets stand before it and
    a restarted worker (or the partition's next owner) redelivers it; nothing is lost. Carrying
    on would leave a gap that freezes the commit point, and a graceful stop would wait on the
    same broker, so the exit is immediate and says why, with a code that asks for a restart."""
    log.critical(
        "the broker has not taken an output for %.0f s (%s); exiting with code %d for a "
        "restart: nothing unpublished was committed, so it will be redelivered",
        timeout,
        _reason(exc),
        EXIT_CANNOT_PUBLISH,
    )
    logging.shutdown()
    os._exit(EXIT_CANNOT_PUBLISH)


def _tune_gc() -> None:
    """Measured in the bench: with CPython's default thresholds a full collection ran every
    ~2.5 s and took 60-120 ms, walking every object the libraries made at import as well as
    ours; those pauses set the p99 latency. Freezing what exists once the worker is up takes
    those objects out of every collection (almost all of them live as long as the process), and
    a higher first threshold makes collections rarer; reference counting still frees the rest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def _category(record: Event) -> str | None:
    value = record.attrs.get("category")
    return str(value) if value is not None else None


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker process until it is stopped (SIGTERM/SIGINT)."""
    from faust.worker import Worker

    worker_app = Foresight(settings)
    if worker_app.load_initial() is None:
        log.warning(
            "registry %s has no CURRENT model; waiting for one on %s",
            settings.registry,
            settings.topic("models.control"),
        )
    worker = Worker(worker_app.app, loglevel=loglevel)
    # Faust's terminal spinner sets the root logger to DEBUG when the level is WARN or above,
    # so every send built a debug record nobody reads (4% of the event loop).
    worker.spinner = None
    worker.execute_from_commandline()


__all__ = ["Foresight", "run_worker"]
