"""Prometheus metrics of the worker (one registry per process, served over HTTP)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry()

EVENTS_IN = Counter("foresight_events_in_total", "Events consumed", registry=REGISTRY)
SCORED = Counter("foresight_events_scored_total", "Events scored and published", registry=REGISTRY)
DLQ = Counter("foresight_dlq_total", "Dead-lettered events by stage", ["stage"], registry=REGISTRY)
SEQUENCE_RESETS = Counter(
    "foresight_sequence_resets_total",
    "Stored user sequences that could not be decoded and were started afresh",
    registry=REGISTRY,
)
ALERTS = Counter("foresight_alerts_total", "Alerts published by kind", ["kind"], registry=REGISTRY)


def _histogram(name: str, description: str, buckets: tuple[float, ...]) -> Histogram:
    return Histogram(name, description, buckets=buckets, registry=REGISTRY)


class BatchHistogram:
    """A Prometheus histogram observed a batch of values at a time; it exposes the same
    series as prometheus_client's ``Histogram`` (``_bucket``, ``_count``, ``_sum``).

    Why not ``Histogram``: its ``observe`` takes a lock and walks the buckets for each value,
    0.87 µs an event offline (more with both cores busy) on the hot path for the end-to-end
    latency's 21 buckets. Here a batch is one ``searchsorted`` and ``bincount``: 0.05 µs an
    event in batches of 256, collecting the values included."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)  # upper bounds, ascending
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last is +Inf
        self.total = 0.0
        self.lock = threading.Lock()  # the metrics endpoint reads from its own thread
        registry.register(self)

    def observe_many(self, values: Sequence[float]) -> None:
        """Count each value in the first bucket whose bound it does not exceed."""
        if not values:
            return
        array = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self.bounds, array), minlength=len(self.counts))
        with self.lock:
            self.counts += counts
            self.total += float(array.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self.lock:
            cumulative, total = np.cumsum(self.counts).tolist(), self.total
        bounds = [*(floatToGoString(b) for b in self.bounds), "+Inf"]
        buckets = list(zip(bounds, cumulative, strict=True))
        yield HistogramMetricFamily(self.name, self.documentation, buckets, sum_value=total)


BATCH_SIZE = _histogram(
    "foresight_batch_size",
    "Sequences per scoring batch",
    (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
INFERENCE = _histogram(
    "foresight_inference_seconds",
    "Model time per batch",
    (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1),
)
#: End-to-end buckets, fine where a healthy worker's p50/p99 lie: a quantile is interpolated
#: within a bucket, and with 50-100 ms in one bucket the monitor read a true p99 of 56 ms as 96.
E2E_FINE_MS = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 125, 150, 200)
END_TO_END = BatchHistogram(
    "foresight_end_to_end_seconds",
    "Event produced → prediction sent",
    tuple(ms / 1000 for ms in (*E2E_FINE_MS, 250, 500, 1000, 2500, 5000, 10_000)),
    REGISTRY,
)
#: Where an event's time goes, per stage of its batch (one observation per batch, of its oldest
#: event): produced → consumed by this worker ("consume"), → its batch handed over ("batch"),
#: → scores back from the scoring process ("score"), → the batch's turn to publish after the
#: one before it ("turn"), → its records queued in the producer ("send"), → the broker's acks
#: of all of them ("ack").
STAGES = ("consume", "batch", "score", "turn", "send", "ack")
STAGE = Histogram(
    "foresight_stage_seconds",
    "Time an event spends in each stage of the pipeline (oldest event of each batch)",
    ["stage"],
    buckets=tuple(
        ms / 1000
        for ms in (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000)
    ),
    registry=REGISTRY,
)
for _stage in STAGES:  # every stage's series exists from the start, at zero
    STAGE.labels(_stage)
LAG = Gauge(
    "foresight_consumer_lag", "Records behind the high watermark", ["partition"], registry=REGISTRY
)
MODEL = Gauge(
    "foresight_model_info",
    "Serving model version and its graph's precision, fp32 or int8 (value 1)",
    ["version", "precision"],
    registry=REGISTRY,
)
MODEL_REFUSED = Counter(
    "foresight_model_refused_total", "Announced models refused", registry=REGISTRY
)
USERS = Gauge(
    "foresight_users_in_table", "Users held in this worker's sequence table", registry=REGISTRY
)
TREND_WATERMARK = Gauge(
    "foresight_trend_watermark_seconds",
    "Event time (epoch seconds) before which this worker has sent all its trend partials; "
    "a value that stops moving while events flow holds every trend window open",
    registry=REGISTRY,
)
TREND_PARTIALS_LATE = Counter(
    "foresight_trend_partials_late_total",
    "Trend partials dropped because their window had already been emitted",
    registry=REGISTRY,
)
#: The event loop's own CPU per part, so that the bench can split the loop's cost per event:
#: "ingest" (decode, validate, sequence update) and "publish" (a batch's outputs built and
#: queued in the producer). The rest of the loop thread's CPU is Faust's per-message machinery,
#: batching, acks and the producer's I/O.
LOOP_PARTS = ("ingest", "publish")
LOOP_CPU = Counter(
    "foresight_loop_cpu_seconds_total",
    "Event-loop thread CPU spent in each part of the hot path",
    ["part"],
    registry=REGISTRY,
)
INGEST_CPU, PUBLISH_CPU = (LOOP_CPU.labels(part) for part in LOOP_PARTS)
