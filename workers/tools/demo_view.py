"""What the demo shows: its state, read from the output topics, and the live terminal view."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from schemas.kafka_security import topic_reader
from schemas.settings import Settings
from workers.tools.worker_processes import ChildProcess


@dataclass
class DemoState:
    """What the live view shows, updated from the output topics."""

    started: float = field(default_factory=time.monotonic)
    predicted: set = field(default_factory=set)
    latencies: deque = field(default_factory=lambda: deque(maxlen=2000))
    recent: deque = field(default_factory=lambda: deque(maxlen=6))
    alerts: list = field(default_factory=list)
    trends: dict = field(default_factory=dict)
    window: deque = field(default_factory=lambda: deque(maxlen=50))
    batch_mean: float = 0.0
    texts: dict = field(default_factory=dict)  # event_id -> (text, rating) of replayed events
    opinions: deque = field(default_factory=lambda: deque(maxlen=5))  # (text, sentiment)
    by_rating: dict = field(default_factory=lambda: {"rated 4-5": [], "rated 1-2": []})

    def scored_text(self, prediction: dict) -> None:
        """Note a prediction's sentiment beside its event's text and rating."""
        if prediction.get("sentiment") is None or prediction["event_id"] not in self.texts:
            return
        text, rating = self.texts[prediction["event_id"]]
        self.opinions.append((text, prediction["sentiment"]))
        if rating is not None and rating != 3:
            self.by_rating["rated 4-5" if rating > 3 else "rated 1-2"].append(
                prediction["sentiment"]
            )

    def rate(self) -> float:
        if len(self.window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.window[0], self.window[-1]
        return (n1 - n0) / max(t1 - t0, 1e-6)


def view(state: DemoState, total: int) -> Group:
    lat = np.array(state.latencies) if state.latencies else np.zeros(1)
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[b]{len(state.predicted):,}[/b]/{total:,} scored",
        f"[b]{state.rate():,.0f}[/b] ev/s",
        f"p50 [b]{np.percentile(lat, 50):.0f}[/b] ms",
        f"p99 [b]{np.percentile(lat, 99):.0f}[/b] ms",
        f"batch [b]{state.batch_mean:.0f}[/b]",
        f"alerts [b]{len(state.alerts)}[/b]",
    )
    preds = Table("user", "event", "next action", "top item", "risk", "surprise", expand=True)
    for p in list(state.recent):
        action = max(p["next_action"], key=p["next_action"].get)
        top = p["top_items"][0]["item_id"] if p["top_items"] else "-"
        preds.add_row(
            p["user_id"], p["event_id"], action, top, f"{p['risk']:.2f}", f"{p['surprise']:.2f}"
        )
    alerts = Table("user", "kind", "score", "why (latest events)", expand=True)
    for a in state.alerts[-5:]:
        why = ", ".join(r["type"] for r in a["reasons"][-4:])
        alerts.add_row(a["user_id"], a["kind"], f"{a['score']:.2f}", why)
    opinions = Table("text", "sentiment (language model)", expand=True)
    for text, value in list(state.opinions):
        opinions.add_row(text[:70], f"{value:+.2f}")
    trending = Table("item", "volume", "z", "sentiment (texts)", expand=True)
    top = sorted(
        (t for t in state.trends.values() if t["key"].startswith("item:")),
        key=lambda t: (t["volume"], t["zscore"]),
        reverse=True,
    )[:5]
    for t in top:
        s = t["sentiment_mean"]
        mood = "-" if s is None else f"{s:+.2f} ({t['sentiment_count']})"
        trending.add_row(t["key"][5:], str(t["volume"]), f"{t['zscore']:+.1f}", mood)
    return Group(
        Panel(head, title="Foresight live"),
        Panel(preds, title="predictions"),
        Panel(alerts, title="alerts"),
        Panel(opinions, title="latest texts"),
        Panel(trending, title="trending items"),
    )


def _batch_mean(port: int) -> float | None:
    """The worker's mean scoring batch so far, from its metrics page (blocking: the watch
    loop runs it in a thread, off the loop that reads the topics)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as page:
            text = page.read().decode()
    except OSError:
        return None
    batch = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "foresight_batch_size"
        for s in family.samples
    }
    count = batch.get("foresight_batch_size_count")
    return batch["foresight_batch_size_sum"] / count if count else None


async def watch(
    settings: Settings,
    state: DemoState,
    total: int,
    worker: ChildProcess,
    live: Live | None,
    timeout: float,
) -> None:
    topics = [settings.topic(t) for t in ("predictions", "alerts", "trends")]
    consumer = topic_reader(settings, *topics)
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while len(state.predicted) < total and time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"worker stopped:\n{worker.tail()}")
            batch = await consumer.getmany(timeout_ms=250)
            for tp, records in batch.items():
                for r in records:
                    value = orjson.loads(r.value)
                    if tp.topic == topics[0]:
                        state.predicted.add(value["event_id"])
                        state.latencies.append(value["latency_ms"])
                        state.recent.append(value)
                        state.scored_text(value)
                    elif tp.topic == topics[1]:
                        state.alerts.append(value)
                    else:
                        state.trends[value["key"]] = value
            state.window.append((time.monotonic(), len(state.predicted)))
            mean = await asyncio.to_thread(_batch_mean, settings.metrics_port)
            state.batch_mean = mean if mean is not None else state.batch_mean
            if live is not None:
                live.update(view(state, total))
    finally:
        await consumer.stop()
