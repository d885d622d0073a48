"""The records a scored event publishes: its prediction, its alerts, and its trend partial.

The prediction is built by ``prediction_value``, one typed function per record that a unit
test pins to ``schemas/json/prediction.schema.json`` (thousands go out per second; a pydantic
model per prediction would cost about a tenth of the hot path). Alerts are rare, so they are
built and validated as :class:`~schemas.records.Alert` itself.
"""

from __future__ import annotations

import logging
import uuid

import orjson

from schemas.records import Alert, AlertKind, AlertReason, Event, EventType
from workers import metrics
from workers.analytics.alerts import AlertPolicy
from workers.analytics.trends import TrendAccumulator
from workers.kafka.publisher import Record
from workers.pipeline.ingest import Job
from workers.pipeline.sequence import SeqEvent
from workers.scoring.scorer import Scorer, Scores, prediction_json

log = logging.getLogger(__name__)
ALERT_REASONS = 5
"""The newest events of the user's sequence that an alert carries as its reasons."""


def prediction_value(
    record: Event,
    model_version: str,
    next_action_json: bytes,
    top_items_json: bytes,
    risk: float,
    surprise: float,
    sentiment: float | None,
    sequence_length: int,
    latency_ms: float,
) -> bytes:
    """A :class:`~schemas.records.Prediction` as JSON bytes; its ``next_action`` and
    ``top_items`` come as JSON already (workers/scoring/scorer.py ``prediction_json``)."""
    return orjson.dumps(
        {
            "event_id": record.event_id,
            "user_id": record.user_id,
            "model_version": model_version,
            "ts": record.ts,
            "next_action": orjson.Fragment(next_action_json),
            "top_items": orjson.Fragment(top_items_json),
            "risk": risk,
            "surprise": surprise,
            "sentiment": sentiment,
            "sequence_length": sequence_length,
            "latency_ms": latency_ms,
        }
    )


def alert_value(
    kind: AlertKind,
    score: float,
    threshold: float,
    record: Event,
    reasons: list[SeqEvent],
    model_version: str,
    now: float,
) -> bytes:
    """An :class:`~schemas.records.Alert` as JSON bytes (validated: alerts are rare)."""
    alert = Alert(
        alert_id=uuid.uuid4().hex,
        event_id=record.event_id,
        user_id=record.user_id,
        kind=kind,
        score=float(score),
        threshold=float(threshold),
        reasons=[
            AlertReason(event_id=e.event_id, type=e.type, ts=e.ts, item_id=e.item_id, price=e.price)
            for e in reasons
        ],
        model_version=model_version,
        ts=now,
    )
    return alert.model_dump_json(exclude_none=True).encode()


class BatchRows:
    """A batch's scores as Python lists, converted once per batch rather than per event."""

    def __init__(self, scores: Scores, scorer: Scorer) -> None:
        self.version = scorer.version
        # the scoring process writes the JSON; scores made in this process (tests) have none
        written = scores.json
        self.json = written if written is not None else prediction_json(scores, scorer.event_types)
        self.risk, self.surprise = scores.risk.tolist(), scores.surprise.tolist()
        # NaN (no text, or no opinion words for the lexicon) becomes null
        self.sentiment = [None if v != v else v for v in scores.sentiment.tolist()]


class OutputBuilder:
    """Builds each scored job's records, deciding its alerts and adding its trend partial."""

    def __init__(self, alerts: AlertPolicy, trend_parts: TrendAccumulator) -> None:
        self.alerts = alerts
        self.trend_parts = trend_parts

    def build(
        self, job: Job, rows: BatchRows, i: int, now: float, latency: float
    ) -> tuple[Record, list[Record]]:
        """Row ``i`` of ``rows`` is ``job``'s: its prediction record and alert records.
        ``latency`` is ``job.latency(now)``, which the caller also observes."""
        r = job.record
        key = job.slot.event.message.key
        latency_ms = latency * 1000.0
        risk, surprise, sentiment = rows.risk[i], rows.surprise[i], rows.sentiment[i]
        value = prediction_value(
            r,
            rows.version,
            rows.json.next_action[i],
            rows.json.top_items[i],
            risk,
            surprise,
            sentiment,
            len(job.prefix),
            latency_ms,
        )
        alerts = []
        for kind, score, threshold in self.alerts.decide(r.user_id, risk, surprise, now):
            metrics.ALERTS.labels(kind).inc()
            reasons = job.prefix[-ALERT_REASONS:]
            alerts.append(
                Record(key, alert_value(kind, score, threshold, r, reasons, rows.version, now))
            )
        category = r.attrs.get("category")
        self.trend_parts.reach(job.slot.event.message.partition, r.ts)
        self.trend_parts.add(
            r.item_id,
            None if category is None else str(category),
            r.type.value,
            r.ts,
            None if r.type is EventType.SEARCH else sentiment,  # a query is not an opinion
            r.event_id,
            r.text,
        )
        return Record(key, value), alerts
