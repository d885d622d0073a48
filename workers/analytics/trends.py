"""Trend aggregates of items and categories over event-time windows.

Trends are aggregated in two phases so that several workers can share the load: each worker
folds its events into per-(key, window) partials and flushes them every
``trend_flush_seconds`` to ``trends.partial`` keyed by item/category; whichever worker owns
that key merges the partials and emits the :class:`~schemas.records.Trend` when the window
closes.

Partials and trends are plain dicts, pinned to their JSON Schemas by unit tests: a busy worker
closes thousands of windows a second, and a pydantic model per trend cost ~5 µs to build and
serialize, against ~0.4 for a dict and orjson.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from schemas.records import TREND_TEXT_CHARS

ENGAGEMENT = ("view", "click", "add_to_cart", "purchase", "rating", "review")


def _new_partial(key: str, window_start: float) -> dict[str, Any]:
    """An empty TrendPartial record: partials are built, sent and merged as these dicts,
    never as objects (the bench's time-lapse stream makes ~0.8 of them an event, and a
    Partial object per partial, built, converted and merged, cost ~6 µs an event)."""
    return {
        "key": key,
        "window_start": window_start,
        "volume": 0,
        "counts": {},
        "sentiment_sum": 0.0,
        "sentiment_count": 0,
        "texts": [],
    }


def _note_text(texts: list[dict[str, Any]], text: dict[str, Any]) -> None:
    """Keep ``texts`` as [the most negative, the most positive] TrendText records, one record
    when they are the same (the earlier one wins a tie)."""
    if not texts:
        texts.append(text)
        return
    lowest = text if text["sentiment"] < texts[0]["sentiment"] else texts[0]
    highest = text if text["sentiment"] > texts[-1]["sentiment"] else texts[-1]
    texts[:] = [lowest] if lowest is highest else [lowest, highest]


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add the TrendPartial record ``other`` (as decoded from ``trends.partial``) to ``into``."""
    into["volume"] += other["volume"]
    counts = into["counts"]
    for k, n in other["counts"].items():
        counts[k] = counts.get(k, 0) + n
    into["sentiment_sum"] += other["sentiment_sum"]
    into["sentiment_count"] += other["sentiment_count"]
    for text in other.get("texts", ()):  # older workers send none
        _note_text(into["texts"], text)


class TrendAccumulator:
    """Phase one: this worker's partial aggregates since the last flush."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self.partials: dict[tuple[str, float], dict[str, Any]] = {}

    def add(
        self,
        item_id: str | None,
        category: str | None,
        event_type: str,
        ts: float,
        sentiment: float | None,
        event_id: str = "",
        text: str | None = None,
    ) -> None:
        start = math.floor(ts / self.window) * self.window
        note = (
            {"event_id": event_id, "text": text[:TREND_TEXT_CHARS], "sentiment": sentiment}
            if text and sentiment is not None
            else None
        )  # built once for the item's and the category's partial
        if item_id:
            self._add(f"item:{item_id}", start, event_type, sentiment, note)
        if category:
            self._add(f"category:{category}", start, event_type, sentiment, note)

    def _add(
        self,
        key: str,
        start: float,
        event_type: str,
        sentiment: float | None,
        note: dict[str, Any] | None,
    ) -> None:
        partial = self.partials.get((key, start))
        if partial is None:
            partial = self.partials[(key, start)] = _new_partial(key, start)
        partial["volume"] += 1
        counts = partial["counts"]
        counts[event_type] = counts.get(event_type, 0) + 1
        if sentiment is not None:
            partial["sentiment_sum"] += sentiment
            partial["sentiment_count"] += 1
        if note is not None:
            _note_text(partial["texts"], note)

    def drain(self) -> list[dict[str, Any]]:
        """The TrendPartial records since the last drain (handed over, not copied)."""
        out = list(self.partials.values())
        self.partials = {}
        return out


@dataclass
class _KeyState:
    windows: dict[float, dict[str, Any]] = field(default_factory=dict)  # merged partials
    prev_volume: float | None = None
    prev_sentiment: float | None = None
    mean: float = 0.0
    var: float = 0.0
    closed: float = 0.0


class TrendAggregator:
    """Phase two: merges partials for the keys this worker owns; emits closed windows.

    A window closes once a partial for a window at least ``grace`` later arrives for that key,
    or when ``flush`` is called with a watermark past it (by default the newest window merged
    for any key, so a key that went quiet still closes). The z-score compares a window's
    volume with an exponentially weighted mean and variance of that key's earlier windows.

    At most ``max_keys`` keys are remembered (a key per item grows with the catalog): beyond
    that the key updated longest ago without an open window is forgotten, and its z-score
    history starts again if it comes back.
    """

    def __init__(
        self,
        window_seconds: float,
        grace_windows: int = 1,
        alpha: float = 0.3,
        max_keys: int = 100_000,
    ):
        self.window = window_seconds
        self.grace = grace_windows * window_seconds
        self.alpha = alpha
        self.max_keys = max_keys
        self.keys: OrderedDict[str, _KeyState] = OrderedDict()  # least recently updated first
        self.newest = 0.0  # the latest window start merged, for any key

    def _state(self, key: str) -> _KeyState:
        state = self.keys.get(key)
        if state is None:
            if len(self.keys) >= self.max_keys:
                self._forget_one()
            state = self.keys[key] = _KeyState()
        self.keys.move_to_end(key)
        return state

    def _forget_one(self) -> None:
        """Forget the least recently updated key with no open window (if every key has one,
        the oldest: its windows would otherwise never be bounded)."""
        for key, state in self.keys.items():
            if not state.windows:
                del self.keys[key]
                return
        self.keys.popitem(last=False)

    def add(self, partial: dict[str, Any]) -> list[dict[str, Any]]:
        """Merge one TrendPartial record (taken over: it may be changed); the Trend records of
        the windows it closes."""
        state = self._state(partial["key"])
        window = partial["window_start"]
        self.newest = max(self.newest, window)
        if state.closed and window < state.closed:
            return []  # too late: that window was already emitted
        merged = state.windows.get(window)
        if merged is None:  # the window's first partial becomes its aggregate
            partial.setdefault("texts", [])  # older workers send none
            state.windows[window] = partial
        else:
            _merge(merged, partial)
        return self._close(partial["key"], state, window - self.grace)

    def flush(self, watermark: float | None = None) -> list[dict[str, Any]]:
        """The Trend records of every window that ends ``grace`` before ``watermark``."""
        watermark = self.newest if watermark is None else watermark
        out = []
        for key, state in list(self.keys.items()):
            out += self._close(key, state, watermark - self.grace)
        return out

    def _close(self, key: str, state: _KeyState, before: float) -> list[dict[str, Any]]:
        out = []
        for start in sorted(w for w in state.windows if w + self.window <= before):
            p = state.windows.pop(start)
            out.append(self._trend(key, state, start, p))
            state.closed = start + self.window
        return out

    def _trend(self, key: str, state: _KeyState, start: float, p: dict[str, Any]) -> dict[str, Any]:
        """The :class:`~schemas.records.Trend` record of one closed window, as a dict."""
        volume = float(p["volume"])
        counts, n_sentiment = p["counts"], p["sentiment_count"]
        sentiment = p["sentiment_sum"] / n_sentiment if n_sentiment else None
        std = math.sqrt(state.var) if state.var > 0 else 1.0
        zscore = (volume - state.mean) / std if state.prev_volume is not None else 0.0
        views = counts.get("view", 0) + counts.get("click", 0)
        record = {
            "key": key,
            "window_start": start,
            "window_end": start + self.window,
            "volume": p["volume"],
            "engagement": {k: counts.get(k, 0) for k in ENGAGEMENT},
            "conversion": counts.get("purchase", 0) / views if views else 0.0,
            "sentiment_mean": sentiment,
            "sentiment_count": n_sentiment,
            "sentiment_change": (
                sentiment - state.prev_sentiment
                if sentiment is not None and state.prev_sentiment is not None
                else None
            ),
            "sentiment_texts": p["texts"],
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
