"""``make demo``: the whole system on this machine, watched live in the terminal.

Local broker (unless FORESIGHT_BROKER points elsewhere) → topics → a quick model if the registry
has none → one worker → synthetic shoppers with injected fraud, mixed with MovieLens-100K
ratings when a copy is at hand → a live view of throughput, latency, predictions, alerts and
trends → a summary with alert precision/recall against the injected labels. Everything it
started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.live import Live

from models import registry
from schemas.settings import Settings
from workers.kafka.topics import create_topics, delete_run_topics
from workers.tools.demo_view import DemoState, view, watch
from workers.tools.generator import Generator
from workers.tools.local_broker import ensure_running
from workers.tools.produce import movielens_events, produce
from workers.tools.worker_processes import MonitorProcess, WorkerProcess

console = Console()


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


def quick_model(
    settings: Settings,
    ml100k: Path | None,
    epochs: int,
    workdir: Path,
    text: tuple[Path, int] | None = None,
) -> str:
    """Train a first model on synthetic history (+ MovieLens when available) and promote it;
    with ``text`` (labelled sentences, how many to use), with a sentiment model too."""
    from models.data import load_event_file
    from models.network import NetworkConfig
    from models.pipeline import refresh_once
    from models.sentiment import SentimentConfig
    from models.sentiment_artifact import SentimentSource
    from models.train import TrainConfig

    workdir.mkdir(parents=True, exist_ok=True)
    trainer_log = logging.getLogger("models")
    if not trainer_log.handlers:  # the sentiment fit takes minutes: show its progress lines
        trainer_log.addHandler(logging.StreamHandler())
        trainer_log.setLevel(logging.INFO)
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
    sentiment = None
    if text is not None:
        sentiment = SentimentSource(text[0], SentimentConfig(limit=text[1]))
    out = refresh_once(history, settings.registry, cfg, None, None, True, sentiment)
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
        # the language model's sentiment of the replayed reviews, by the rating they came with
        "review_sentiment": {
            group: {"texts": len(v), "mean": round(float(np.mean(v)), 3) if v else None}
            for group, v in state.by_rating.items()
        },
    }


def _prepare(settings: Settings, ml100k: Path | None, epochs: int, workdir: Path, text) -> Settings:
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
        version = quick_model(settings, ml100k, epochs, workdir / "train", text)
        console.print(f"==> model {version} promoted")
    return run


def _start_monitor(run: Settings, port: int, workdir: Path) -> MonitorProcess | None:
    """The live page beside the worker; the demo goes on without it if it cannot start."""
    metrics = [f"http://127.0.0.1:{run.metrics_port}/metrics"]
    monitor = MonitorProcess(run, workdir / "demo-monitor.log", port, metrics)
    monitor.start()
    try:
        monitor.wait_ready()
    except RuntimeError as exc:
        console.print(f"[yellow]monitor page not started (demo goes on): {exc}[/yellow]")
        monitor.stop()
        return None
    console.print(f"[b]==> live monitor page: {monitor.url}[/b] (open it in a browser)")
    return monitor


def run_demo(
    settings: Settings,
    events: int,
    rate: float,
    ml100k: Path | None,
    epochs: int,
    live: bool,
    workdir: Path,
    text: tuple[Path, int] | None = None,
    monitor_port: int = 0,
) -> dict:
    """Run the demo end to end; returns the summary. Stops all it started."""
    started_broker = ensure_running(settings)
    worker: WorkerProcess | None = None
    monitor: MonitorProcess | None = None
    run: Settings | None = None
    try:
        run = _prepare(settings, ml100k, epochs, workdir, text)
        traffic_events, fraud_users = traffic(events, ml100k, seed=11)
        worker = WorkerProcess(run, workdir / "demo-worker.log", loglevel="warning")
        worker.start()
        if monitor_port:
            monitor = _start_monitor(run, monitor_port, workdir)
        console.print(
            f"==> worker pid {worker.pid}; replaying {len(traffic_events):,} events "
            f"at {rate:,.0f}/s ({len(fraud_users)} users follow fraud patterns)"
        )
        state = DemoState()
        state.texts = {
            e["event_id"]: (e["text"], e.get("rating")) for e in traffic_events if e.get("text")
        }

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
                        view(state, len(traffic_events)), console=console, refresh_per_second=4
                    ) as screen:
                        await watch(run, state, len(traffic_events), worker, screen, 600)
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
        if monitor is not None:
            monitor.stop()
        if worker is not None:
            worker.stop()
        try:
            if run is not None:
                asyncio.run(delete_run_topics(run))
        except Exception as exc:  # the broker stops below all the same
            console.print(f"[yellow]could not delete the demo's topics: {exc!r}[/yellow]")
        if started_broker is not None:
            started_broker.stop()


__all__ = ["run_demo"]
