"""The workers' health as the monitor shows it, from their Prometheus endpoints.

Each scrape sums the workers' counters and histogram buckets; rates and latency quantiles come
from the difference between the newest scrape and one about ``span`` seconds older, the way
Prometheus' ``rate`` and ``histogram_quantile`` would compute them.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

E2E = "foresight_end_to_end_seconds"


@dataclass
class Totals:
    """One scrape of every worker, summed."""

    at: float
    counters: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    e2e_buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    lag: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    versions: set[str] = field(default_factory=set)

    def add(self, text: str) -> None:
        """Fold one worker's ``/metrics`` page in."""
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in (
                    "foresight_events_in_total",
                    "foresight_events_scored_total",
                    "foresight_dlq_total",
                ):
                    self.counters[s.name] += s.value
                elif s.name == f"{E2E}_bucket":
                    self.e2e_buckets[float(s.labels["le"])] += s.value
                elif s.name == "foresight_consumer_lag":
                    self.lag[s.labels.get("partition", "")] += s.value
                elif s.name == "foresight_model_info" and s.value == 1:
                    self.versions.add(s.labels.get("version", ""))


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' estimate of quantile ``q`` from cumulative bucket counts (upper bound →
    count); linear within a bucket; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # above the highest finite bucket: its bound is all we know
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def _delta(new: float, old: float) -> float:
    """A counter's increase; a worker restart resets it to zero, so a drop counts from zero."""
    return new - old if new >= old else new


class WorkerMetrics:
    """The recent scrapes of all workers and what the page shows of them."""

    def __init__(self, urls: list[str], span: float = 5.0, history: int = 180) -> None:
        self.urls = urls
        self.span = span
        self.scrapes: deque[Totals] = deque(maxlen=64)
        self.errors: dict[str, str] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=history)  # for the chart
        self.current = self._summarise()  # what the page shows until the next scrape

    def record(self, pages: dict[str, str | Exception], at: float | None = None) -> None:
        """One round of scrapes: each URL's page, or the error that came instead."""
        totals = Totals(at=time.time() if at is None else at)
        self.errors = {}
        for url, page in pages.items():
            if isinstance(page, Exception):
                self.errors[url] = f"{type(page).__name__}: {page}"[:200]
            else:
                try:
                    totals.add(page)
                except ValueError as exc:
                    self.errors[url] = f"not a metrics page: {exc}"[:200]
        if len(self.errors) < len(pages):  # nobody answering: no figures rather than zeros
            self.scrapes.append(totals)
        self.current = self._summarise()  # once per scrape, however many pages are open
        if len(self.errors) < len(pages):
            self.history.append(
                {k: self.current[k] for k in ("at", "in_rate", "scored_rate", "e2e_p99_ms")}
            )

    def _baseline(self) -> Totals | None:
        newest = self.scrapes[-1]
        older = [s for s in self.scrapes if s.at <= newest.at - self.span]
        return older[-1] if older else (self.scrapes[0] if len(self.scrapes) > 1 else None)

    def _summarise(self) -> dict[str, Any]:
        """Rates per second over the last ``span``, end-to-end p50/p99 (ms), lag, versions."""
        up = len(self.urls) - len(self.errors)
        out: dict[str, Any] = {"workers": len(self.urls), "workers_up": up, "errors": self.errors}
        if not self.scrapes:
            return out
        new, old = self.scrapes[-1], self._baseline()
        out.update(
            at=new.at,
            events_in=new.counters["foresight_events_in_total"],
            scored=new.counters["foresight_events_scored_total"],
            dlq=new.counters["foresight_dlq_total"],
            lag_total=sum(new.lag.values()),
            lag=dict(sorted(new.lag.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)),
            model_versions=sorted(new.versions),
            in_rate=None,
            scored_rate=None,
            dlq_rate=None,
            e2e_p50_ms=None,
            e2e_p99_ms=None,
        )
        if old is None or new.at <= old.at:
            return out
        seconds = new.at - old.at

        def rate(name: str) -> float:
            return _delta(new.counters[name], old.counters[name]) / seconds

        out.update(
            in_rate=rate("foresight_events_in_total"),
            scored_rate=rate("foresight_events_scored_total"),
            dlq_rate=rate("foresight_dlq_total"),
        )
        recent = {b: _delta(n, old.e2e_buckets.get(b, 0.0)) for b, n in new.e2e_buckets.items()}
        for q, name in ((0.5, "e2e_p50_ms"), (0.99, "e2e_p99_ms")):
            value = histogram_quantile(q, recent)
            out[name] = None if value is None else value * 1000.0
        return out
