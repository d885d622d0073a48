"""A micro-batch's way from the batcher to the broker: score, publish in order, ack.

Two batches are handled at once (the scoring process works on one while the event loop
publishes the other), so each batch waits for its predecessor's turn to publish: a user's
predictions and changelog states stay in order across batches. At most
``MAX_IN_FLIGHT_BATCHES`` batches are published and waiting for the broker's acks.

The sequence table's changelog records go out here, one per user per batch, with the batch's
predictions through the same batched producer: per-record sends through Faust were the largest
cost of the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from schemas.codec import Stage
from schemas.settings import Settings
from workers import metrics
from workers.kafka.publisher import Publisher, Record
from workers.pipeline.dead_letters import reason
from workers.pipeline.ingest import Job
from workers.pipeline.outbox import Outbox, Output
from workers.pipeline.outputs import BatchRows, OutputBuilder
from workers.pipeline.sequence_store import SequenceStore
from workers.scoring.follower import ModelHolder
from workers.scoring.process import ScoringFailed
from workers.scoring.scorer import Scorer, Scores

log = logging.getLogger(__name__)
MAX_IN_FLIGHT_BATCHES = 4
"""Batches published and waiting for the broker's acks; more wait before publishing."""
MAX_IN_FLIGHT_TRANSACTED_BATCHES = 64
"""The same in exactly-once mode, where a batch waits for its partitions' next transactions
(up to ``transaction_interval_ms`` later): four would cap the rate at four batches a commit,
and a paced stream makes small batches. At most ~16 MB of outputs held (batches of 256)."""
BATCHES_AT_ONCE = 2
"""Batches being scored or published at once: one in the scoring process, one publishing."""


class StageClock:
    """Times one batch's stages (workers/metrics.py ``STAGE``), from its oldest event's
    production and consumption to the broker's acks: where the end-to-end latency goes."""

    def __init__(self, oldest: Job) -> None:
        now = time.time()
        if oldest.produced_at:
            metrics.STAGE.labels("consume").observe(
                max(0.0, oldest.ingested_at - oldest.produced_at)
            )
        metrics.STAGE.labels("batch").observe(max(0.0, now - oldest.ingested_at))
        self.last = now

    def lap(self, stage: str) -> None:
        now = time.time()
        metrics.STAGE.labels(stage).observe(max(0.0, now - self.last))
        self.last = now


class Failure(NamedTuple):
    """A job that goes to the DLQ instead of being predicted, and why."""

    job: Job
    stage: Stage
    reason: str


@dataclass
class BatchPublisher:
    """Scores each batch with the model in service and publishes its outputs in order."""

    settings: Settings
    holder: ModelHolder
    outputs: OutputBuilder
    store: SequenceStore
    publisher: Publisher
    outbox: Outbox
    in_flight: asyncio.Semaphore = field(init=False)
    _publish_turn: asyncio.Future | None = None  # done once the latest batch has published

    def __post_init__(self) -> None:
        transacted = self.settings.processing_guarantee == "exactly_once"
        limit = MAX_IN_FLIGHT_TRANSACTED_BATCHES if transacted else MAX_IN_FLIGHT_BATCHES
        self.in_flight = asyncio.Semaphore(limit)

    async def handle(self, jobs: list[Job], free: Callable[[], None]) -> None:
        """The batcher's handler: score one batch, let the batcher close the next one
        (``free``), publish this one after the batch before it, and ack its messages once the
        broker has every output."""
        previous = self._publish_turn
        turn = self._publish_turn = asyncio.get_running_loop().create_future()
        try:
            await self._score_and_publish(jobs, previous, free)
        finally:
            turn.set_result(None)

    async def _score_and_publish(
        self, jobs: list[Job], previous: asyncio.Future | None, free: Callable[[], None]
    ) -> None:
        clock = StageClock(jobs[0])
        scorer = await self.holder.wait()  # read once: a swap lands between batches only
        metrics.BATCH_SIZE.observe(len(jobs))
        scored, scores, failed = await self.score_isolating(scorer, jobs)
        free()  # the scoring process is free for the next batch while this one publishes
        clock.lap("score")
        if failed:
            first = failed[0].reason
            log.warning("%d of %d sequences could not be scored: %s", len(failed), len(jobs), first)
        if previous is not None:
            await previous
        await self.in_flight.acquire()
        clock.lap("turn")
        began = time.thread_time()
        try:
            delivered = await self.publish(jobs, scored, scores, failed, scorer)
        except Exception as exc:  # outputs that cannot be queued: the worker cannot go on
            self.in_flight.release()
            self.publisher.fail(exc)
            raise
        metrics.PUBLISH_CPU.inc(time.thread_time() - began)
        clock.lap("send")
        delivered.add_done_callback(lambda _: self.in_flight.release())
        delivered.add_done_callback(lambda _: clock.lap("ack"))

    async def score_isolating(
        self, scorer: Scorer, jobs: list[Job]
    ) -> tuple[list[Job], Scores | None, list[Failure]]:
        """Scores for the jobs that can be scored, and a Failure for each that cannot: a batch
        the model raises on is split in halves until each failing sequence is alone, so one
        bad sequence costs about 2·log2(batch) extra calls, not its neighbours' predictions.
        (A scoring process that cannot stay up fails the whole batch: bisecting would restart
        it hundreds of times for nothing.)"""
        try:
            texts = [j.record.text for j in jobs]
            return jobs, await scorer.score([j.encoded for j in jobs], texts), []
        except ScoringFailed as exc:  # the model raised on something in this batch
            if len(jobs) == 1:
                return [], None, [Failure(jobs[0], "score", reason(exc))]
        except Exception as exc:
            log.exception("the scoring process failed")
            return [], None, [Failure(job, "score", reason(exc)) for job in jobs]
        half = len(jobs) // 2
        parts = [await self.score_isolating(scorer, part) for part in (jobs[:half], jobs[half:])]
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
    ) -> asyncio.Future:
        """Hand the outbox the batch's changelog records (every job's: each event is in its
        user's stored sequence, scored or not), the scored jobs' predictions and alerts, and a
        DLQ record for each job that failed; returns the future that says they are all on the
        broker and the batch's messages finished."""
        predictions, alerts, failed = self._build(scored, scores, scorer, list(failed))
        states: dict[bytes | None, Output] = {}  # the last state per user in this batch wins
        changelog = self.store.changelog_topic
        for job in jobs:  # (it goes with the user's last job, the one whose offset is highest)
            message = job.slot.event.message
            record = Record(message.key, job.sequence_after, None, message.partition)
            states[message.key] = Output(job.slot, changelog, record)
        dead = [self.outbox.dead_letter(f.job.slot, f.stage, f.reason) for f in failed]
        outputs = [*states.values(), *predictions, *alerts, *dead]
        return await self.outbox.emit([j.slot for j in jobs], outputs, scored=len(predictions))

    def _build(
        self, scored: list[Job], scores: Scores | None, scorer: Scorer, failed: list[Failure]
    ) -> tuple[list[Output], list[Output], list[Failure]]:
        """The scored jobs' predictions and alerts; a job whose outputs cannot be built is
        added to ``failed`` (stage ``publish``) and dead-lettered alone."""
        predictions: list[Output] = []
        alerts: list[Output] = []
        if scores is None:
            return predictions, alerts, failed
        now = time.time()
        rows = BatchRows(scores, scorer)
        topic, alert_topic = self.settings.topic("predictions"), self.settings.topic("alerts")
        latencies: list[float] = []  # observed once for the batch (see BatchHistogram)
        for i, job in enumerate(scored):
            latency = job.latency(now)
            try:
                prediction, job_alerts = self.outputs.build(job, rows, i, now, latency)
            except Exception as exc:
                log.exception("building the outputs of %s failed", job.record.event_id)
                failed.append(Failure(job, "publish", reason(exc)))
                continue
            predictions.append(Output(job.slot, topic, prediction))
            alerts += [Output(job.slot, alert_topic, alert) for alert in job_alerts]
            latencies.append(latency)
        metrics.END_TO_END.observe_many(latencies)
        return predictions, alerts, failed
