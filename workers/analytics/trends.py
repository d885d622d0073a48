"""Trend aggregates of items and categories over event-time windows.

Trends are aggregated in two phases so that several workers can share the load: each worker
folds its events into per-(key, window) partials and flushes them every
``trend_flush_seconds`` to ``trends.partial`` keyed by item/category; whichever worker owns
that key merges the partials and emits the :class:`~schemas.records.Trend` when the window
closes.

A window closes on an event-time watermark, not on the first later partial: each worker sends,
with every flush, how far in event time all of its partitions have got (the slowest partition
that still has events to read), and a window closes once every worker's watermark is past its
end and grace. During a backlog a worker reads its partitions unevenly, an hour of event time
apart; closing a key's window on its first later partial dropped the slower partitions'
partials as late (a quarter of them with flushes every 0.1 s).

Partials and trends are plain dicts, pinned to their JSON Schemas by unit tests: a busy worker
closes thousands of windows a second, and a pydantic model per trend cost ~5 µs to build and
serialize, against ~0.4 for a dict and orjson.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from schemas.records import TREND_TEXT_CHARS

ENGAGEMENT = ("view", "click", "add_to_cart", "purchase", "rating", "review")
MAX_OPEN_WINDOWS = 16
"""Open windows a trend key may hold before its oldest closes early: a watermark is held
back for at most a source timeout, and a key needs grace + 2 windows open otherwise."""


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
    """Phase one: this worker's partial aggregates since the last flush, and how far in event
    time each ``events`` partition's partials have got."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self.partials: dict[tuple[str, float], dict[str, Any]] = {}
        self.reached: dict[int, float] = {}  # events partition → latest event time added

    def reach(self, partition: int, ts: float) -> None:
        """An event of ``partition`` with time ``ts`` has been added."""
        if ts > self.reached.get(partition, -math.inf):
            self.reached[partition] = ts

    def keep_partitions(self, partitions: set[int]) -> None:
        """This worker now reads only ``partitions``: forget how far the others got (one that
        comes back holds the watermark until it is read again)."""
        self.reached = {p: t for p, t in self.reached.items() if p in partitions}

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


HOLD = 0.0
"""The watermark of a worker with events to read from a time it does not know yet (a
partition not read since it was assigned): before any event time the schemas accept, so it
holds every window open."""


def worker_watermark(reached: dict[int, float], idle: dict[int, bool]) -> float | None:
    """How far in event time this worker's partials have certainly got: ``HOLD`` if it
    cannot say yet, None if it holds nothing back (nothing read and nothing to read).

    ``idle`` holds the worker's ``events`` partitions, True where nothing was left to read
    for a while: an idle partition's next event is a new one, so only the others hold the
    watermark back, each at the latest event time it reached (events within a partition
    arrive roughly in time order; the aggregator's grace covers the rest). When every
    partition is idle, the newest."""
    behind = [reached.get(p) for p, done in idle.items() if not done]
    if None in behind:  # events to come, from a time not known yet
        return HOLD
    if behind:
        return min(t for t in behind if t is not None)
    return max((reached[p] for p in idle if p in reached), default=None)


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

    Each sender (a worker) reports its watermark per ``trends.partial`` partition with its
    partials (``hear``); a window closes once the lowest watermark heard within
    ``source_timeout`` seconds is ``grace`` past its end (``close``). A sender silent longer
    (a worker that died) no longer holds windows open, nor does one that sent its last record
    (``forget``: it stopped), nor a partition this worker no longer reads
    (``keep_partitions``). With no watermark heard at
    all (only workers too old to send one), ``flush`` closes on the newest window merged for
    any key. A partial for a window already emitted is dropped and counted in ``late``.

    The z-score compares a window's volume with an exponentially weighted mean and variance
    of that key's earlier windows.

    Memory is bounded: at most ``max_keys`` keys are remembered (a key per item grows with the
    catalog); beyond that the key updated longest ago without an open window is forgotten,
    and its z-score history starts again if it comes back. A key holds at most
    ``MAX_OPEN_WINDOWS``; beyond that its oldest closes early (a watermark held back for long).
    """

    def __init__(
        self,
        window_seconds: float,
        grace_windows: int = 1,
        alpha: float = 0.3,
        max_keys: int = 100_000,
        source_timeout: float = 60.0,
    ):
        self.window = window_seconds
        self.grace = grace_windows * window_seconds
        self.alpha = alpha
        self.max_keys = max_keys
        self.source_timeout = source_timeout
        self.keys: OrderedDict[str, _KeyState] = OrderedDict()  # least recently updated first
        self.open: dict[float, set[str]] = {}  # window start → keys with that window open
        self.marks: dict[tuple[str, int], tuple[float, float]] = {}  # → (watermark, heard at)
        self.newest = 0.0  # the latest window start merged, for any key
        self.late = 0  # partials dropped: their window was already emitted

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
        key, state = self.keys.popitem(last=False)
        for start in state.windows:
            self._unindex(start, key)

    def _unindex(self, start: float, key: str) -> None:
        keys = self.open.get(start)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.open[start]

    def add(self, partial: dict[str, Any]) -> list[dict[str, Any]]:
        """Merge one TrendPartial record (taken over: it may be changed). Returns the Trend
        record of the window it pushed out (a key with too many open windows), if any."""
        key, window = partial["key"], partial["window_start"]
        state = self._state(key)
        self.newest = max(self.newest, window)
        if window < state.closed:
            self.late += 1
            return []
        merged = state.windows.get(window)
        if merged is not None:
            _merge(merged, partial)
            return []
        partial.setdefault("texts", [])  # older workers send none
        state.windows[window] = partial  # the window's first partial becomes its aggregate
        self.open.setdefault(window, set()).add(key)
        if len(state.windows) <= MAX_OPEN_WINDOWS:
            return []
        return self._close_key(key, state, min(state.windows) + self.window)

    def hear(self, source: str, partition: int, watermark: float, now: float) -> None:
        """``source`` has sent, on ``partition``, every partial before event time
        ``watermark`` (``now``: a monotonic clock, to time out silent sources)."""
        self.marks[(source, partition)] = (watermark, now)

    def forget(self, source: str, partition: int) -> None:
        """``source`` sent its last record on ``partition`` (it stopped)."""
        self.marks.pop((source, partition), None)

    def keep_partitions(self, partitions: set[int]) -> None:
        """This worker now reads only ``partitions``: watermarks heard on others hold
        nothing open."""
        for mark in [m for m in self.marks if m[1] not in partitions]:
            del self.marks[mark]

    def watermark(self, now: float) -> float | None:
        """The lowest watermark of the sources heard within ``source_timeout``, if any."""
        for mark, (_, heard) in list(self.marks.items()):
            if now - heard > self.source_timeout:
                del self.marks[mark]
        return min((w for w, _ in self.marks.values()), default=None)

    def close(self, watermark: float) -> list[dict[str, Any]]:
        """The Trend records of every window that ends ``grace`` before ``watermark``, oldest
        first."""
        out = []
        for start in sorted(s for s in self.open if s + self.window + self.grace <= watermark):
            for key in sorted(self.open.pop(start)):
                state = self.keys.get(key)
                if state is not None and start in state.windows:
                    out += self._close_key(key, state, start + self.window)
        return out

    def flush(self, watermark: float | None = None) -> list[dict[str, Any]]:
        """``close`` on ``watermark``; by default on the sources' watermark or, with none
        heard, on the newest window merged for any key (so a key that went quiet closes)."""
        if watermark is None:
            watermark = self.watermark(time.monotonic())
        if watermark is None:
            watermark = self.newest
        return self.close(watermark)

    def _close_key(self, key: str, state: _KeyState, before: float) -> list[dict[str, Any]]:
        """Emit ``key``'s windows that end by ``before``, in time order."""
        out = []
        for start in sorted(w for w in state.windows if w + self.window <= before):
            out.append(self._trend(key, state, start, state.windows.pop(start)))
            self._unindex(start, key)
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
