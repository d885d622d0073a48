"""Trend aggregates of items and categories over event-time windows.

Trends are aggregated in two phases so that several workers can share the load: each worker
folds its events into per-(key, window) partials and flushes them every second to
``trends.partial`` keyed by item/category; whichever worker owns that key merges the partials
and emits the :class:`~schemas.records.Trend` when the window closes.

Partials and trends are plain dicts, pinned to their JSON Schemas by unit tests: a busy worker
closes thousands of windows a second, and a pydantic model per trend cost ~5 µs to build and
serialize, against ~0.4 for a dict and orjson.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

from schemas.records import TREND_TEXT_CHARS

ENGAGEMENT = ("view", "click", "add_to_cart", "purchase", "rating", "review")


@dataclass
class Partial:
    """Additive aggregate of one key in one window (what workers exchange, as the
    :class:`~schemas.internal.TrendPartial` record ``to_record`` builds)."""

    volume: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sentiment_sum: float = 0.0
    sentiment_count: int = 0
    lowest: dict[str, Any] | None = None  # the most negative text, as a TrendText record
    highest: dict[str, Any] | None = None  # the most positive one

    def add(
        self, event_type: str, sentiment: float | None, text: dict[str, Any] | None = None
    ) -> None:
        """One event; ``text`` is its TrendText record when it has a text with a sentiment."""
        self.volume += 1
        self.counts[event_type] += 1
        if sentiment is not None:
            self.sentiment_sum += sentiment
            self.sentiment_count += 1
        if text is not None:
            self._note_text(text)

    def _note_text(self, text: dict[str, Any]) -> None:
        if self.lowest is None or text["sentiment"] < self.lowest["sentiment"]:
            self.lowest = text
        if self.highest is None or text["sentiment"] > self.highest["sentiment"]:
            self.highest = text

    @property
    def texts(self) -> list[dict[str, Any]]:
        """The most negative and most positive texts (one record when they are the same)."""
        if self.lowest is None or self.highest is None:
            return []
        return [self.lowest] if self.lowest is self.highest else [self.lowest, self.highest]

    def merge(self, other: dict[str, Any]) -> None:
        """Add a TrendPartial record (as decoded from ``trends.partial``)."""
        self.volume += other["volume"]
        for k, n in other["counts"].items():
            self.counts[k] += n
        self.sentiment_sum += other["sentiment_sum"]
        self.sentiment_count += other["sentiment_count"]
        for text in other.get("texts", ()):  # older workers send none
            self._note_text(text)

    def to_record(self, key: str, window_start: float) -> dict[str, Any]:
        """The TrendPartial record of this aggregate (a plain dict: thousands go out per
        second, and a test pins its fields to the schema)."""
        return {
            "key": key,
            "window_start": window_start,
            "volume": self.volume,
            "counts": dict(self.counts),
            "sentiment_sum": self.sentiment_sum,
            "sentiment_count": self.sentiment_count,
            "texts": self.texts,
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
        event_id: str = "",
        text: str | None = None,
    ) -> None:
        start = math.floor(ts / self.window) * self.window
        note = (
            {"event_id": event_id, "text": text[:TREND_TEXT_CHARS], "sentiment": sentiment}
            if text and sentiment is not None
            else None
        )  # built once for the item's and the category's partial
        for key in (
            f"item:{item_id}" if item_id else None,
            f"category:{category}" if category else None,
        ):
            if key:
                self.partials[(key, start)].add(event_type, sentiment, note)

    def drain(self) -> list[dict]:
        out = [p.to_record(k, w) for (k, w), p in self.partials.items()]
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
        """Merge one TrendPartial record; the Trend records of the windows it closes."""
        state = self._state(partial["key"])
        window = partial["window_start"]
        self.newest = max(self.newest, window)
        if state.closed and window < state.closed:
            return []  # too late: that window was already emitted
        state.windows.setdefault(window, Partial()).merge(partial)
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

    def _trend(self, key: str, state: _KeyState, start: float, p: Partial) -> dict[str, Any]:
        """The :class:`~schemas.records.Trend` record of one closed window, as a dict."""
        volume = float(p.volume)
        sentiment = p.sentiment_sum / p.sentiment_count if p.sentiment_count else None
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
            "sentiment_count": p.sentiment_count,
            "sentiment_change": (
                sentiment - state.prev_sentiment
                if sentiment is not None and state.prev_sentiment is not None
                else None
            ),
            "sentiment_texts": p.texts,
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
