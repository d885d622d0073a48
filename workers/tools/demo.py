"""``make demo``: the whole system on this machine, watched live in the terminal.

Local broker (unless FORESIGHT_BROKER points elsewhere) → topics → a quick model if the registry
has none → one worker → synthetic shoppers with injected fraud, mixed with MovieLens-100K
ratings when a copy is at hand → a live view of throughput, latency, predictions, alerts and
trends → a summary with alert precision/recall against the injected labels. Everything it
started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from models import registry
from schemas.kafka_security import topic_reader
from schemas.settings import Settings
from workers.kafka.topics import create_topics
from workers.tools.generator import Generator
from workers.tools.local_broker import ensure_running
from workers.tools.produce import movielens_events, produce
from workers.tools.worker_processes import ChildProcess, WorkerProcess

console = Console()


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

    def rate(self) -> float:
        if len(self.window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.window[0], self.window[-1]
        return (n1 - n0) / max(t1 - t0, 1e-6)


def _view(state: DemoState, total: int) -> Group:
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
    trending = Table("item", "volume", "z", "sentiment", expand=True)
    top = sorted(
        (t for t in state.trends.values() if t["key"].startswith("item:")),
        key=lambda t: (t["volume"], t["zscore"]),
        reverse=True,
    )[:5]
    for t in top:
        s = t["sentiment_mean"]
        trending.add_row(
            t["key"][5:], str(t["volume"]), f"{t['zscore']:+.1f}", "-" if s is None else f"{s:+.2f}"
        )
    return Group(
        Panel(head, title="Foresight live"),
        Panel(preds, title="predictions"),
        Panel(alerts, title="alerts"),
        Panel(trending, title="trending items"),
    )


def _batch_mean(port: int) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
    except OSError:
        return None
    s = re.search(rb"^foresight_batch_size_sum (\S+)$", text, re.M)
    c = re.search(rb"^foresight_batch_size_count (\S+)$", text, re.M)
    return float(s.group(1)) / float(c.group(1)) if s and c and float(c.group(1)) else None


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
                    elif tp.topic == topics[1]:
                        state.alerts.append(value)
                    else:
                        state.trends[value["key"]] = value
            state.window.append((time.monotonic(), len(state.predicted)))
            mean = _batch_mean(settings.metrics_port)
            state.batch_mean = mean if mean is not None else state.batch_mean
            if live is not None:
                live.update(_view(state, total))
    finally:
        await consumer.stop()


def traffic(n: int, ml100k: Path | None, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Synthetic events (with fraud) interleaved with MovieLens ratings; user → pattern."""
    pairs = list(Generator(seed=seed, fraud_rate=0.03).events(n))
    fraud_users = {e["user_id"]: p for e, p in pairs if p is not None}
    events = [e for e, _ in pairs]
    if ml100k and (ml100k / "u.data").exists():
        ratings = movielens_events(ml100k)[: n // 4]
        base = events[0]["ts"] if events else 0.0
        for i, r in enumerate(ratings):  # MovieLens users keep their ids, in their own space
            r = {**r, "user_id": f"ml{r['user_id']}", "ts": base + i}
            events.insert(min(len(events), i * 4 + 1), r)
    return events, fraud_users


def quick_model(settings: Settings, ml100k: Path | None, epochs: int, workdir: Path) -> str:
    """Train a first model on synthetic history (+ MovieLens when available) and promote it."""
    from models.data import load_event_file
    from models.network import NetworkConfig
    from models.pipeline import refresh_once
    from models.train import TrainConfig

    workdir.mkdir(parents=True, exist_ok=True)
    history_file, labels_file = workdir / "history.jsonl", workdir / "labels.jsonl"
    pairs = list(Generator(seed=1, fraud_rate=0.05).events(40_000))
    with open(history_file, "wb") as fh, open(labels_file, "wb") as lf:
        for e, p in pairs:
            fh.write(orjson.dumps(e) + b"\n")
            lf.write(orjson.dumps({"event_id": e["event_id"], "fraud": p is not None}) + b"\n")
        if ml100k and (ml100k / "u.data").exists():
            for r in movielens_events(ml100k):
                fh.write(orjson.dumps({**r, "user_id": f"ml{r['user_id']}"}) + b"\n")
    history = load_event_file(history_file, labels_file)
    cfg = TrainConfig(
        epochs=epochs,
        patience=3,
        max_len=settings.max_sequence_length,
        network=NetworkConfig(max_positions=64, top_k=settings.top_k),
    )
    out = refresh_once(history, settings.registry, cfg, None, None, True)
    return out["version"]


def summary(state: DemoState, fraud_users: dict[str, str], seconds: float) -> dict:
    alerted = {a["user_id"] for a in state.alerts}
    tp = len(alerted & set(fraud_users))
    lat = np.array(state.latencies) if state.latencies else np.zeros(1)
    caught = Counter(fraud_users[u] for u in alerted & set(fraud_users))
    return {
        "events_scored": len(state.predicted),
        "events_per_s": round(len(state.predicted) / max(seconds, 1e-6), 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1),
        },
        "alerts": len(state.alerts),
        "alerted_users": len(alerted),
        "fraud_users": len(fraud_users),
        "alert_precision": round(tp / len(alerted), 3) if alerted else None,
        "alert_recall": round(tp / len(fraud_users), 3) if fraud_users else None,
        "caught_by_pattern": dict(caught),
        "trends": len(state.trends),
    }


def _prepare(settings: Settings, ml100k: Path | None, epochs: int, workdir: Path) -> Settings:
    """Fresh topics for this run (the settings it runs with), and a model if there is none."""
    run = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}demo-{uuid.uuid4().hex[:6]}.",
            "store": "memory://",
            "app_id": f"demo-{uuid.uuid4().hex[:6]}",
        }
    )
    asyncio.run(create_topics(run))
    if registry.current(settings.registry) is None:
        console.print("[b]==> no model yet: training a quick one (progress below)[/b]")
        version = quick_model(settings, ml100k, epochs, workdir / "train")
        console.print(f"==> model {version} promoted")
    return run


def run_demo(
    settings: Settings,
    events: int,
    rate: float,
    ml100k: Path | None,
    epochs: int,
    live: bool,
    workdir: Path,
) -> dict:
    """Run the demo end to end; returns the summary. Stops all it started."""
    started_broker = ensure_running(settings)
    worker: WorkerProcess | None = None
    try:
        run = _prepare(settings, ml100k, epochs, workdir)
        traffic_events, fraud_users = traffic(events, ml100k, seed=11)
        worker = WorkerProcess(run, workdir / "demo-worker.log", loglevel="warning")
        worker.start()
        console.print(
            f"==> worker pid {worker.pid}; replaying {len(traffic_events):,} events "
            f"at {rate:,.0f}/s ({len(fraud_users)} users follow fraud patterns)"
        )
        state = DemoState()

        async def feed() -> None:
            """A few events first; the paced stream starts once the worker answers them, so
            latency measures the pipeline, not the worker's start-up."""
            warm, rest = traffic_events[:50], traffic_events[50:]
            await produce(run, warm, len(warm), progress=False)
            while len(state.predicted) < len(warm):
                await asyncio.sleep(0.2)
            state.started = time.monotonic()
            await produce(run, rest, len(rest), rate=rate, progress=False)

        async def main() -> None:
            feeding = asyncio.create_task(feed())
            try:
                if live:
                    with Live(
                        _view(state, len(traffic_events)), console=console, refresh_per_second=4
                    ) as view:
                        await watch(run, state, len(traffic_events), worker, view, 600)
                else:
                    await watch(run, state, len(traffic_events), worker, None, 600)
                await feeding
            finally:
                feeding.cancel()

        began = time.monotonic()
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            console.print("interrupted: stopping")
        result = summary(state, fraud_users, time.monotonic() - max(began, state.started))
        return result
    finally:
        if worker is not None:
            worker.stop()
        if started_broker is not None:
            started_broker.stop()


__all__ = ["run_demo"]
