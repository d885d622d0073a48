"""What the worker publishes besides predictions: alerts with cooldown, and trend aggregates.

Trends are aggregated in two phases so that several workers can share the load: each worker
folds its events into per-(key, window) partials and flushes them every second to
``trends.partial`` keyed by item/category; whichever worker owns that key merges the partials
and emits the :class:`~schemas.records.Trend` when the window closes.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from workers.sequence import SeqEvent

POSITIVE = frozenset(
    """good great excellent amazing love loved perfect best awesome fantastic
wonderful happy recommend nice fast superb brilliant favourite favorite works solid""".split()
)
NEGATIVE = frozenset(
    """bad terrible awful hate hated worst broken poor slow refund disappointed
disappointing useless waste fake scam cheap defective returned boring horrible""".split()
)
_WORD = re.compile(r"[a-z']+")


def text_sentiment(text: str) -> float | None:
    """Lexicon sentiment in [-1, 1] (None when no opinion words): used when no LM is loaded."""
    words = _WORD.findall(text.lower())
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    return None if pos + neg == 0 else (pos - neg) / (pos + neg)


def event_sentiment(rating: float | None, text: str | None) -> float | None:
    """Ratings map 1..5 → -1..1; review text through the lexicon; their mean when both."""
    values = []
    if rating is not None:
        values.append((rating - 3.0) / 2.0)
    if text:
        s = text_sentiment(text)
        if s is not None:
            values.append(s)
    return sum(values) / len(values) if values else None


class AlertPolicy:
    """Thresholds plus a per-user, per-kind cooldown (so one incident is one alert)."""

    def __init__(
        self,
        risk_threshold: float,
        surprise_threshold: float,
        cooldown: float,
        risk_enabled: bool = True,
        anomaly_enabled: bool = True,
    ) -> None:
        self.risk_threshold = risk_threshold
        self.surprise_threshold = surprise_threshold
        self.cooldown = cooldown
        self.risk_enabled = risk_enabled
        self.anomaly_enabled = anomaly_enabled
        self._last: dict[tuple[str, str], float] = {}

    def decide(
        self, user: str, risk: float, surprise: float, now: float
    ) -> list[tuple[str, float, float]]:
        """(kind, score, threshold) for each alert to raise now."""
        out = []
        if self.risk_enabled and risk >= self.risk_threshold:
            out.append(("fraud_risk", risk, self.risk_threshold))
        if self.anomaly_enabled and surprise >= self.surprise_threshold:
            out.append(("anomaly", surprise, self.surprise_threshold))
        fired = []
        for kind, score, threshold in out:
            last = self._last.get((user, kind))
            if last is None or now - last >= self.cooldown:
                self._last[(user, kind)] = now
                fired.append((kind, score, threshold))
        return fired

    def prune(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t < self.cooldown}


def alert_record(
    kind: str,
    score: float,
    threshold: float,
    user: str,
    event_id: str,
    reasons: list[SeqEvent],
    version: str,
    now: float,
) -> dict:
    return {
        "alert_id": uuid.uuid4().hex,
        "event_id": event_id,
        "user_id": user,
        "kind": kind,
        "score": float(score),
        "threshold": float(threshold),
        "model_version": version,
        "ts": now,
        "reasons": [
            {
                k: v
                for k, v in (
                    ("event_id", e.event_id),
                    ("type", e.type),
                    ("ts", e.ts),
                    ("item_id", e.item_id),
                    ("price", e.price),
                )
                if v is not None
            }
            for e in reasons
        ],
    }


ENGAGEMENT = ("view", "click", "add_to_cart", "purchase", "rating", "review")


@dataclass
class Partial:
    """Additive aggregate of one key in one window (what workers exchange)."""

    volume: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sentiment_sum: float = 0.0
    sentiment_n: int = 0

    def add(self, event_type: str, sentiment: float | None) -> None:
        self.volume += 1
        self.counts[event_type] += 1
        if sentiment is not None:
            self.sentiment_sum += sentiment
            self.sentiment_n += 1

    def merge(self, other: dict) -> None:
        self.volume += other["v"]
        for k, n in other["c"].items():
            self.counts[k] += n
        self.sentiment_sum += other["s"]
        self.sentiment_n += other["n"]

    def to_dict(self, key: str, window: float) -> dict:
        return {
            "k": key,
            "w": window,
            "v": self.volume,
            "c": dict(self.counts),
            "s": self.sentiment_sum,
            "n": self.sentiment_n,
        }


class TrendAccumulator:
    """Phase one: this worker's partial aggregates since the last flush."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self.partials: dict[tuple[str, float], Partial] = defaultdict(Partial)

    def add(
        self,
        item_id: str | None,
        category: str | None,
        event_type: str,
        ts: float,
        sentiment: float | None,
    ) -> None:
        start = math.floor(ts / self.window) * self.window
        for key in (
            f"item:{item_id}" if item_id else None,
            f"category:{category}" if category else None,
        ):
            if key:
                self.partials[(key, start)].add(event_type, sentiment)

    def drain(self) -> list[dict]:
        out = [p.to_dict(k, w) for (k, w), p in self.partials.items()]
        self.partials = defaultdict(Partial)
        return out


@dataclass
class _KeyState:
    windows: dict[float, Partial] = field(default_factory=dict)
    prev_volume: float | None = None
    prev_sentiment: float | None = None
    mean: float = 0.0
    var: float = 0.0
    closed: float = 0.0


class TrendAggregator:
    """Phase two: merges partials for the keys this worker owns; emits closed windows.

    A window closes once a partial for a window at least ``grace`` later arrives for that key,
    or when ``flush`` is called with a watermark past it. The z-score compares a window's
    volume with an exponentially weighted mean and variance of that key's earlier windows.
    """

    def __init__(self, window_seconds: float, grace_windows: int = 1, alpha: float = 0.3):
        self.window = window_seconds
        self.grace = grace_windows * window_seconds
        self.alpha = alpha
        self.keys: dict[str, _KeyState] = defaultdict(_KeyState)

    def add(self, partial: dict) -> list[dict]:
        state = self.keys[partial["k"]]
        window = partial["w"]
        if state.closed and window < state.closed:
            return []  # too late: that window was already emitted
        state.windows.setdefault(window, Partial()).merge(partial)
        return self._close(partial["k"], state, window - self.grace)

    def flush(self, watermark: float) -> list[dict]:
        out = []
        for key, state in list(self.keys.items()):
            out += self._close(key, state, watermark - self.grace)
        return out

    def _close(self, key: str, state: _KeyState, before: float) -> list[dict]:
        out = []
        for start in sorted(w for w in state.windows if w + self.window <= before):
            p = state.windows.pop(start)
            out.append(self._trend(key, state, start, p))
            state.closed = start + self.window
        return out

    def _trend(self, key: str, state: _KeyState, start: float, p: Partial) -> dict:
        volume = float(p.volume)
        sentiment = p.sentiment_sum / p.sentiment_n if p.sentiment_n else None
        std = math.sqrt(state.var) if state.var > 0 else 1.0
        zscore = (volume - state.mean) / std if state.prev_volume is not None else 0.0
        views = p.counts.get("view", 0) + p.counts.get("click", 0)
        record = {
            "key": key,
            "window_start": start,
            "window_end": start + self.window,
            "volume": p.volume,
            "engagement": {k: p.counts.get(k, 0) for k in ENGAGEMENT},
            "conversion": p.counts.get("purchase", 0) / views if views else 0.0,
            "sentiment_mean": sentiment,
            "sentiment_change": (
                sentiment - state.prev_sentiment
                if sentiment is not None and state.prev_sentiment is not None
                else None
            ),
            "volume_change": volume - (state.prev_volume or 0.0),
            "zscore": zscore,
        }
        if state.prev_volume is None:
            state.mean = volume
        else:
            diff = volume - state.mean
            state.mean += self.alpha * diff
            state.var = (1 - self.alpha) * (state.var + self.alpha * diff * diff)
        state.prev_volume = volume
        if sentiment is not None:
            state.prev_sentiment = sentiment
        return record
