"""The composition root: builds the worker's Faust app and wires its rooms together.

    events ─► pipeline.ingest ─► pipeline.batcher ─► pipeline.batches ─► kafka.publisher
              (decode, validate,   (micro-batches)    (scoring.process,   (predictions, alerts,
               sequence_store)                          pipeline.outputs)   changelog, DLQ)

Nothing here decides anything: each room's module says what it does and why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from pathlib import Path

from mode import Service

from models import registry
from schemas.kafka_security import faust_credentials
from schemas.settings import Settings
from workers import health, shutdown, tuning
from workers.analytics.alerts import AlertPolicy
from workers.kafka import faust_compat
from workers.kafka.consumer import EagerDeliveryApp
from workers.kafka.log_limits import quiet_noisy_libraries
from workers.kafka.publisher import Publisher, exit_for_restart
from workers.kafka.raw_records import RawBytes
from workers.kafka.rebalance import RebalanceHooks
from workers.pipeline.acks import OrderedAcks, ack
from workers.pipeline.batcher import MicroBatcher
from workers.pipeline.batches import BATCHES_AT_ONCE, BatchPublisher
from workers.pipeline.drained import DrainedPartitions
from workers.pipeline.expiry import Expiry
from workers.pipeline.ingest import Ingest, Job, caught_up
from workers.pipeline.outbox import Outbox
from workers.pipeline.outputs import OutputBuilder
from workers.pipeline.sequence_store import SequenceStore
from workers.pipeline.transactions import Transactions
from workers.pipeline.trend_exchange import TrendExchange
from workers.scoring.catalog_follower import CatalogFollower
from workers.scoring.follower import ModelFollower, ModelHolder
from workers.scoring.process import ScoringProcess

log = logging.getLogger(__name__)
LAG_REPORT_SECONDS = 5.0
WATCHDOG_SECONDS = 1.0
PARTITION_IDLE_SECONDS = 1.0
"""How long an ``events`` partition must have had nothing left to read before it stops
holding the trend watermark back (workers/pipeline/drained.py says why)."""
_RAW_BYTES = RawBytes()  # the agents decode: failures are theirs too


def build_faust_app(s: Settings) -> EagerDeliveryApp:
    """The Faust app with the settings the at-least-once design depends on."""
    app = EagerDeliveryApp(
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
        broker_session_timeout=s.session_timeout_seconds,
        stream_buffer_maxsize=4 * s.batch_size,
        consumer_max_fetch_size=s.fetch_bytes_per_partition,
        table_standby_replicas=1,
        **faust_compat.fast_path_settings(),
    )
    app.fetch_max_wait_ms = s.fetch_max_wait_ms
    return app


class StreamWorker:
    """One worker process: the Faust app, its agents and timers, and the scoring service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self.app = app = build_faust_app(s)
        table = app.Table(
            "sequences", default=None, key_type=bytes, value_type=bytes, partitions=s.partitions
        )
        self.store = SequenceStore(table)
        exit_for = functools.partial(exit_for_restart, s.publish_timeout_seconds)
        generation = lambda: app.consumer_generation_id  # noqa: E731
        self.publisher = Publisher(s, on_failure=exit_for)
        self.transactions: Transactions | None = None
        if s.processing_guarantee == "exactly_once":
            self.transactions = Transactions(
                s,
                app.conf.id,
                generation,
                exit_for,
                self.publisher,
                self.store.changelog_topic,
                self.store.persisted,
            )
            app.transactional_topics = frozenset((s.topic("events"), s.topic("sequences.expire")))
        self.acks = OrderedAcks(
            generation,
            lambda tp: faust_compat.committed_offset(app.consumer, tp),
            release=self.transactions.release if self.transactions else ack,
        )
        hooks = {self.store.changelog_topic: self.store.persisted}
        self.outbox = Outbox(s, self.publisher, self.acks, self.transactions, hooks)
        self.expiry = Expiry(s, self.store, self.publisher)
        self.holder = ModelHolder()
        self.scoring_process = ScoringProcess()
        self.follower = ModelFollower(s, self.holder, self.scoring_process)
        self.catalog = CatalogFollower(s, self.scoring_process)
        self.alerts = AlertPolicy(
            s.risk_threshold,
            s.surprise_threshold,
            s.alert_cooldown_seconds,
            anomaly_enabled=s.anomaly_alerts,
        )
        self.drained = DrainedPartitions(PARTITION_IDLE_SECONDS)
        self.trends = TrendExchange(s, self.publisher, self.idle_partitions)
        outputs = OutputBuilder(self.alerts, self.trends.parts)
        self.batches = BatchPublisher(
            s, self.holder, outputs, self.store, self.publisher, self.outbox
        )
        self.batcher: MicroBatcher[Job] = MicroBatcher(
            self.batches.handle,
            s.batch_size,
            s.batch_max_wait_ms,
            concurrency=BATCHES_AT_ONCE,
            caught_up=caught_up(app, s.batch_size),
        )
        self.ingest = Ingest(s, self.store, self.acks, self.outbox, self.expiry, self.batcher)
        self.grace = shutdown.GracePeriod(s.shutdown_grace_seconds, self.scoring_process.pid)
        self.progress = health.ProgressWatch(
            s.stall_seconds,
            model_loaded=lambda: self.holder.version is not None,
            on_stuck=functools.partial(health.exit_stalled, self.scoring_process.pid),
        )
        self._wire()

    def _wire(self) -> None:
        app, s = self.app, self.settings
        events = app.topic(s.topic("events"), s.topic("sequences.expire"), schema=_RAW_BYTES)
        app.agent(events, name="ingest")(self.ingest.consume)
        partials = app.topic(s.topic("trends.partial"), schema=_RAW_BYTES)
        app.agent(partials, name="trends")(self.trends.merge)
        RebalanceHooks(app, self.acks, self.transactions, self.trends.assigned).connect()
        app.timer(s.trend_flush_seconds)(self.trends.flush)
        app.timer(s.sweep_interval_seconds)(self.sweep)
        # progress is sampled at least four times per stall period, so a stall is seen in time
        app.timer(min(LAG_REPORT_SECONDS, s.stall_seconds / 4))(self.report_progress)
        worker = self

        class Scoring(Service):
            """Starts and stops the scoring machinery with the Faust app (``app.service``
            instantiates it with the app's loop and beacon)."""

            async def on_start(self) -> None:
                await worker.start_scoring()

            async def on_stop(self) -> None:
                await worker.stop_scoring()

        app.service(Scoring)

    async def start_scoring(self) -> None:
        """Load the current model (models.control, else the registry's CURRENT) and the
        catalog items it does not know, then batch."""
        quiet_noisy_libraries()
        log.info("event loop: %s", type(asyncio.get_running_loop()).__module__.split(".")[0])
        health.serve(self.settings.metrics_port, self.progress)
        health.watchdog(self.progress, WATCHDOG_SECONDS)
        await self.publisher.start()
        await self.scoring_process.start()
        await self.follower.start(self.initial_model())
        await self.catalog.start()
        self.batcher.start()
        tuning.tune_gc()

    async def stop_scoring(self) -> None:
        """Runs after Faust's own stop waited for every delivered event to be acked (its
        ``stream_wait_empty``), so no batch is in hand any more (see workers/shutdown.py)."""
        await self.batcher.stop()
        if self.publisher.started:  # the partials of committed events: lost if not sent
            await self.trends.flush_last()
        await self.catalog.stop()
        await self.follower.stop()
        if self.transactions is not None:
            await self.transactions.stop()
        await self.publisher.stop()
        await self.scoring_process.stop()

    def initial_model(self) -> Path | None:
        """The registry's CURRENT model, the fallback when models.control announces none."""
        version = registry.current(self.settings.registry)
        return self.settings.registry / version if version else None

    async def sweep(self) -> None:
        """Housekeeping: expire idle users, forget old cooldowns, close idle trend windows."""
        await self.expiry.sweep()
        self.alerts.prune(time.time())
        await self.trends.close_idle()

    async def idle_partitions(self) -> dict[int, bool]:
        """Each assigned ``events`` partition: nothing left to read for a while?"""
        consumer, topic = self.app.consumer, self.settings.topic("events")
        return await self.drained.idle(
            [tp for tp in consumer.assignment() if tp.topic == topic],
            consumer.highwater,
            self.acks.unfinished_from,
            consumer.position,
        )

    async def report_progress(self) -> None:
        """One pass over the assigned ``events`` partitions for the lag gauge and the stall
        watch (which runs no clock while Faust recovers tables or rebalances: no progress is
        expected then)."""
        consumer, topic = self.app.consumer, self.settings.topic("events")
        if self.app.in_recovery or self.app.rebalancing:
            self.progress.starting("recovering tables" if self.app.in_recovery else "rebalancing")
            return
        self.progress.observe(
            [
                health.Sample(
                    tp.partition,
                    faust_compat.committed_offset(consumer, tp),
                    await consumer.position(tp),
                    consumer.highwater(tp),
                )
                for tp in consumer.assignment()
                if tp.topic == topic
            ]
        )


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker process until it is stopped (SIGTERM/SIGINT)."""
    faust_compat.check_versions()
    tuning.use_event_loop(settings.event_loop)  # before Faust or mode make a loop
    worker = StreamWorker(settings)
    if worker.initial_model() is None:
        log.warning(
            "registry %s has no CURRENT model; waiting for one on %s",
            settings.registry,
            settings.topic("models.control"),
        )
    faust_worker = shutdown.GracefulWorker(worker.app, loglevel=loglevel, grace=worker.grace)
    # Faust's terminal spinner sets the root logger to DEBUG when the level is WARN or above,
    # so every send built a debug record nobody reads (4% of the event loop).
    faust_worker.spinner = None
    faust_worker.execute_from_commandline()


__all__ = ["StreamWorker", "run_worker"]
