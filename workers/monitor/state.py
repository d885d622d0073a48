"""What the monitor remembers of ``trends`` and ``alerts``, bounded by configuration, and the
view of it that one page asks for (filtered, sorted and cut to what a screen can show).

Trends and alerts arrive at least once (a worker restart re-sends some): a key's window is kept
once, by its start, and the newer copy wins.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from schemas.records import MAX_TREND_KEY_CHARS, Alert, Trend

TREND_SORTS = (
    "key",
    "window_end",
    "volume",
    "conversion",
    "sentiment_mean",
    "sentiment_count",
    "sentiment_change",
    "zscore",
)
KINDS = ("all", "item", "category")
ALERT_KINDS = ("", "fraud_risk", "anomaly")
MAX_FILTER_CHARS = 128
SPARK_POINTS = 30
"""Windows per sparkline."""


@dataclass(frozen=True)
class ViewQuery:
    """What one page shows: which trends (kind, key substring, sort), which key's sentiment
    over time, which alerts (kind, user substring), how many rows."""

    kind: str = "all"
    q: str = ""
    sort: str = "zscore"
    desc: bool = True
    key: str = ""
    alert_kind: str = ""
    user: str = ""
    rows: int = 50

    @classmethod
    def parse(cls, params: Any) -> ViewQuery:
        """From URL query parameters; anything unknown or out of range falls back to the
        default (a monitor answers every URL with a page, never with an error)."""

        def pick(name: str, allowed: tuple[str, ...], default: str) -> str:
            value = params.get(name, default)
            return value if value in allowed else default

        try:
            rows = min(200, max(1, int(params.get("rows", 50))))
        except ValueError:
            rows = 50
        return cls(
            kind=pick("kind", KINDS, "all"),
            q=params.get("q", "")[:MAX_FILTER_CHARS],
            sort=pick("sort", TREND_SORTS, "zscore"),
            desc=params.get("desc", "1") != "0",
            key=params.get("key", "")[:MAX_TREND_KEY_CHARS],
            alert_kind=pick("alert_kind", ALERT_KINDS, ""),
            user=params.get("user", "")[:MAX_FILTER_CHARS],
            rows=rows,
        )


@dataclass
class KeyHistory:
    """The latest windows of one trend key, oldest first, and the texts behind them."""

    windows: dict[float, dict[str, Any]] = field(default_factory=dict)
    texts: deque = field(default_factory=lambda: deque(maxlen=8))

    def latest(self) -> dict[str, Any]:
        return self.windows[max(self.windows)]


def _point(trend: Trend) -> dict[str, Any]:
    return {
        "window_start": trend.window_start,
        "window_end": trend.window_end,
        "volume": trend.volume,
        "conversion": trend.conversion,
        "sentiment_mean": trend.sentiment_mean,
        "sentiment_count": trend.sentiment_count,
        "sentiment_change": trend.sentiment_change,
        "zscore": trend.zscore,
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class MonitorState:
    """Bounded memory of the topics: ``max_keys`` trend keys (the least recently updated go
    first) with ``history`` windows each, and the newest ``max_alerts`` alerts."""

    def __init__(self, max_keys: int = 5000, history: int = 120, max_alerts: int = 500) -> None:
        self.max_keys, self.history = max_keys, history
        self.keys: OrderedDict[str, KeyHistory] = OrderedDict()
        self.alerts: deque[dict[str, Any]] = deque(maxlen=max_alerts)
        self.alert_counts: dict[str, int] = {}  # by kind, every alert seen
        self.trends_seen = self.records_skipped = 0

    def add_trend(self, trend: Trend) -> None:
        self.trends_seen += 1
        entry = self.keys.pop(trend.key, None) or KeyHistory()
        self.keys[trend.key] = entry  # now the most recently updated
        entry.windows[trend.window_start] = _point(trend)
        while len(entry.windows) > self.history:
            del entry.windows[min(entry.windows)]
        for text in trend.sentiment_texts:
            if all(t["event_id"] != text.event_id for t in entry.texts):
                entry.texts.append({**text.model_dump(), "window_end": trend.window_end})
        while len(self.keys) > self.max_keys:
            self.keys.popitem(last=False)

    def add_alert(self, alert: Alert) -> None:
        self.alert_counts[alert.kind.value] = self.alert_counts.get(alert.kind.value, 0) + 1
        self.alerts.append(alert.model_dump(mode="json", exclude_none=True))

    def skipped(self) -> None:
        """A record on ``trends`` or ``alerts`` that is not what its schema says."""
        self.records_skipped += 1

    def view(self, query: ViewQuery) -> dict[str, Any]:
        """The JSON a page renders for ``query``."""
        return {
            "trends": self._trend_rows(query),
            "selected": self._selected(query.key),
            "alerts": self._alert_rows(query),
            "seen": {
                "trends": self.trends_seen,
                "alerts": sum(self.alert_counts.values()),
                "skipped": self.records_skipped,
            },
        }

    def _trend_rows(self, query: ViewQuery) -> dict[str, Any]:
        needle = query.q.casefold()
        rows = []
        for key, entry in self.keys.items():
            if query.kind != "all" and not key.startswith(f"{query.kind}:"):
                continue
            if needle and needle not in key.casefold():
                continue
            rows.append({"key": key, **entry.latest()})
        present = [r for r in rows if not _missing(r[query.sort])]
        present.sort(key=lambda r: r[query.sort], reverse=query.desc)
        missing = [r for r in rows if _missing(r[query.sort])]  # no sentiment: last either way
        shown = (present + missing)[: query.rows]
        for row in shown:
            windows = self.keys[row["key"]].windows
            recent = [windows[w] for w in sorted(windows)[-SPARK_POINTS:]]
            row["spark_volume"] = [p["volume"] for p in recent]
            row["spark_sentiment"] = [p["sentiment_mean"] for p in recent]
        return {"total": len(rows), "rows": shown}

    def _selected(self, key: str) -> dict[str, Any] | None:
        entry = self.keys.get(key)
        if entry is None:
            return None
        return {
            "key": key,
            "points": [entry.windows[w] for w in sorted(entry.windows)],
            "texts": list(reversed(entry.texts)),  # newest first
        }

    def _alert_rows(self, query: ViewQuery) -> dict[str, Any]:
        needle = query.user.casefold()
        rows = [
            a
            for a in reversed(self.alerts)  # newest first
            if (not query.alert_kind or a["kind"] == query.alert_kind)
            and (not needle or needle in a["user_id"].casefold())
        ]
        return {"total": len(rows), "counts": dict(self.alert_counts), "rows": rows[: query.rows]}
