"""The ``foresight`` command: broker, topics, worker, training, models, traffic and benchmarks.

Commands import their heavy dependencies (torch, Faust) only when they run, so ``foresight
broker status`` stays instant and the worker image never needs torch.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from schemas.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic or SettingsError: show the reason, not a traceback
        raise click.ClickException(f"bad FORESIGHT_* configuration: {exc}") from None


@click.group()
def main() -> None:
    """Foresight: streaming next-action prediction, fraud alerts and trends on Kafka."""


# --- broker -------------------------------------------------------------------------------------
@main.group()
def broker() -> None:
    """The local single-node Apache Kafka used for development, tests, demo and bench."""


def _local_broker(s: Settings | None = None):
    from workers.tools.local_broker import for_settings

    return for_settings(s or _settings())


@broker.command("start")
def broker_start() -> None:
    """Fetch jars once, format storage once, start, and wait until it answers."""
    from workers.tools.local_broker import BrokerError

    b = _local_broker()
    try:
        took = b.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"broker running at {b.bootstrap} (pid {b.pid()}, ready in {took:.1f}s, log {b.log_file})"
    )


@broker.command("stop")
def broker_stop() -> None:
    """Stop the local broker cleanly."""
    b = _local_broker()
    click.echo("broker stopped" if b.stop() else "broker was not running")


@broker.command("status")
def broker_status() -> None:
    """Print the bootstrap address if the local broker runs (exit 1 if not)."""
    from workers.tools.local_broker import answers

    b = _local_broker()
    if answers(b.bootstrap):
        click.echo(b.bootstrap)
    else:
        click.echo(f"not running ({b.bootstrap})", err=True)
        sys.exit(1)


# --- topics -------------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """Foresight's Kafka topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic idempotently (configured partitions; models.control compacted)."""
    from workers.kafka.topics import create_topics

    for name, outcome in asyncio.run(create_topics(_settings())).items():
        click.echo(f"{outcome:8} {name}")


@topics.command("list")
def topics_list() -> None:
    """Show Foresight's topics and their partition counts."""
    from workers.kafka.topics import list_topics

    for name, parts in asyncio.run(list_topics(_settings())).items():
        click.echo(f"{name:32} {'missing' if parts is None else f'{parts} partitions'}")


# --- worker -------------------------------------------------------------------------------------
@main.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run one stream worker (start more for more partitions; they share one consumer group)."""
    from workers.app import run_worker
    from workers.kafka.topics import create_topics

    s = _settings()
    asyncio.run(create_topics(s))
    run_worker(s, loglevel)


# --- training and the registry ------------------------------------------------------------------
def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: use e.g. 90s, 30m, 6h") from None


@main.command()
@click.option(
    "--data",
    "data_spec",
    required=True,
    help="ml100k:DIR | jsonl:FILE | csv:FILE | parquet:FILE | topic:NAME",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="JSONL of {event_id, fraud} labels for the risk head.",
)
@click.option(
    "--registry",
    type=click.Path(path_type=Path),
    default=None,
    help="Registry directory (default FORESIGHT_REGISTRY).",
)
@click.option("--epochs", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-len", type=int, default=None, help="Events per sequence (default setting).")
@click.option(
    "--cold-start",
    "cold_share",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of items hidden in the cold-start run; 0 skips it.",
)
@click.option("--every", default=None, help="Retrain on this schedule (e.g. 6h) until stopped.")
@click.option(
    "--promote/--no-promote",
    default=True,
    show_default=True,
    help="Promote when the regression gate passes.",
)
@click.option("--users", type=int, default=None, help="Train on the first N users only.")
def train(
    data_spec, labels, registry, epochs, seed, max_len, cold_share, every, promote, users
) -> None:
    """Train, evaluate (EVAL_PROTOCOL.md), export ONNX, verify parity, register, gate, promote."""
    import logging
    import time

    from models.data import load
    from models.pipeline import refresh_once
    from models.train import TrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    s = _settings()
    registry = registry or s.registry
    cfg = TrainConfig(
        epochs=epochs, seed=seed, max_len=max_len or s.max_sequence_length, top_k=s.top_k
    )
    while True:
        history = load(data_spec, s, labels)
        if users:
            keep = set(sorted({x.user_id for x in history.interactions}, key=_natural)[:users])
            history.interactions = [x for x in history.interactions if x.user_id in keep]
        out = refresh_once(
            history,
            registry,
            cfg,
            cold_share or None,
            s if data_spec.startswith("topic:") or every else None,
            promote,
        )
        _print_report(out["version"], out["report"], registry)
        if not every:
            return
        click.echo(f"next refresh in {every}")
        time.sleep(_duration(every))


def _natural(key: str) -> tuple:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def _print_report(version: str, report: dict, registry: Path) -> None:
    m, b = report["metrics"], report["baselines"]
    click.echo(f"\nversion {version} → {registry / version}")
    click.echo(f"{'':14}{'HR@1':>8}{'HR@10':>8}{'HR@20':>8}{'NDCG@10':>9}")
    click.echo(f"{'model':14}{m['hr@1']:8.4f}{m['hr@10']:8.4f}{m['hr@20']:8.4f}{m['ndcg@10']:9.4f}")
    for name in ("markov", "most_popular"):
        x = b[name]
        click.echo(
            f"{name:14}{x['hr@1']:8.4f}{x['hr@10']:8.4f}{x['hr@20']:8.4f}{x['ndcg@10']:9.4f}"
        )
    if "cold_start" in report:
        c = report["cold_start"]
        click.echo(
            f"cold start ({c['users']} users): model HR@10 {c['hr@10']:.4f} NDCG@10 "
            f"{c['ndcg@10']:.4f} | text-only HR@10 {c['text_baseline']['hr@10']:.4f} "
            f"NDCG@10 {c['text_baseline']['ndcg@10']:.4f}"
        )
    g = report.get("gate", {})
    click.echo(
        f"gate: {g.get('reason')} (candidate {g.get('candidate')}, current "
        f"{g.get('current')}) → {'promoted' if g.get('promoted') else 'not promoted'}"
    )
    click.echo(f"train time {report['train_seconds']}s")


@main.group()
def model() -> None:
    """The model registry."""


@model.command("list")
def model_list() -> None:
    """Every version with its test NDCG@10; * marks CURRENT."""
    from models import registry as reg

    s = _settings()
    current = reg.current(s.registry)
    for version in reg.versions(s.registry):
        m = reg.manifest(s.registry, version)
        click.echo(
            f"{'*' if version == current else ' '} {version}  ndcg@10="
            f"{m['metrics'].get('ndcg@10', float('nan')):.4f}  "
            f"data={m['training_data']['source']}"
        )


@model.command("verify")
@click.argument("version")
def model_verify(version: str) -> None:
    """Load VERSION exactly as the worker would: sha256, signature, golden batch."""
    from models import registry as reg
    from models.runtime import ModelRefused

    try:
        loaded = reg.verify(_settings().registry, version)
    except ModelRefused as exc:
        raise click.ClickException(f"{version} refused: {exc}") from None
    click.echo(f"{version} ok (provider {loaded.provider})")


@model.command("promote")
@click.argument("version")
@click.option(
    "--announce/--no-announce",
    default=True,
    show_default=True,
    help="Publish on models.control (needs a reachable broker).",
)
def model_promote(version: str, announce: bool) -> None:
    """Verify VERSION, mark it CURRENT, announce it on models.control."""
    from models import registry as reg
    from models.runtime import ModelRefused

    s = _settings()
    try:
        record = reg.promote(s.registry, version, s if announce else None)
    except ModelRefused as exc:
        raise click.ClickException(f"{version} refused: {exc}") from None
    click.echo(
        f"{version} is current ({record.sha256[:12]}…)"
        + (f", announced on {s.topic('models.control')}" if announce else "")
    )


# --- traffic ------------------------------------------------------------------------------------
@main.command()
@click.option("--events", "n", type=int, default=10_000, show_default=True)
@click.option("--users", type=int, default=2_000, show_default=True)
@click.option("--items", type=int, default=500, show_default=True)
@click.option(
    "--fraud-rate",
    type=float,
    default=0.02,
    show_default=True,
    help="Share of user visits that follow a fraud pattern.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write JSONL here (default: produce to the events topic).",
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=None,
    help="Write per-event fraud labels (JSONL) here.",
)
def generate(n, users, items, fraud_rate, seed, out, labels) -> None:
    """Synthetic e-commerce events with labelled fraud, deterministic by seed."""
    import orjson

    from workers.tools.generator import Generator
    from workers.tools.produce import replay

    pairs = list(Generator(users, items, fraud_rate, seed).events(n))
    if labels:
        with open(labels, "wb") as fh:
            for e, pattern in pairs:
                fh.write(
                    orjson.dumps(
                        {
                            "event_id": e["event_id"],
                            "fraud": pattern is not None,
                            "pattern": pattern,
                        }
                    )
                    + b"\n"
                )
    if out:
        with open(out, "wb") as fh:
            for e, _ in pairs:
                fh.write(orjson.dumps(e) + b"\n")
        click.echo(f"wrote {len(pairs)} events to {out}")
    else:
        stats = asyncio.run(replay(_settings(), [e for e, _ in pairs], len(pairs)))
        click.echo(f"produced {stats.sent} events in {stats.seconds:.1f}s")
    frauds = sum(p is not None for _, p in pairs)
    click.echo(f"{frauds} fraud events ({frauds / max(len(pairs), 1):.1%})")


@main.command("replay")
@click.option(
    "--source", required=True, help="ml100k:DIR | jsonl:FILE | csv:FILE | parquet:FILE | synthetic"
)
@click.option("--limit", type=int, default=None, help="At most this many events.")
@click.option("--rate", type=float, default=None, help="Target events per second.")
@click.option(
    "--speedup",
    type=float,
    default=None,
    help="Replay at event-time speed times this factor (e.g. 86400: a day per second).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def replay_command(source, limit, rate, speedup, seed) -> None:
    """Produce events from a dataset, a file or the generator to the events topic."""
    from workers.tools.produce import replay, source_events

    events, total = source_events(source, limit, seed)
    stats = asyncio.run(replay(_settings(), events, total, rate, speedup))
    click.echo(f"replayed {stats.sent} events in {stats.seconds:.1f}s ({stats.rate:.0f} ev/s)")


# --- bench --------------------------------------------------------------------------------------
@main.command()
@click.option("--events", "n", type=int, default=50_000, show_default=True)
@click.option(
    "--naive-events",
    type=int,
    default=5_000,
    show_default=True,
    help="Events for the (slow) naive run.",
)
@click.option("--latency-seconds", type=float, default=15.0, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=Path("bench-results/bench.json"),
    show_default=True,
)
def bench(n, naive_events, latency_seconds, json_path) -> None:
    """raw consume vs full pipeline vs naive per-event scoring, on the real broker."""
    import orjson

    from workers.tools.bench import markdown, plot_latency, run_bench

    s = _settings()
    started = _ensure_local_broker(s)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(run_bench(s, n, json_path.parent, naive_events, latency_seconds))
    finally:
        if started is not None:
            started.stop()
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    table = markdown(result)
    json_path.with_suffix(".md").write_text(table)
    plot_latency(result, json_path.with_suffix(".png"))
    click.echo(table)
    click.echo(
        f"wrote {json_path}, {json_path.with_suffix('.md')} and {json_path.with_suffix('.png')}"
    )


def _ensure_local_broker(s: Settings):
    from workers.tools.local_broker import BrokerError, ensure_running

    try:
        return ensure_running(s)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None


# --- demo ---------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--events",
    "n",
    type=int,
    default=30_000,
    show_default=True,
    help="Events to replay before the demo ends (Ctrl-C ends it sooner).",
)
@click.option("--rate", type=float, default=500, show_default=True, help="Events per second.")
@click.option(
    "--epochs",
    type=int,
    default=8,
    show_default=True,
    help="Epochs for the quick first model when the registry is empty.",
)
@click.option("--live/--no-live", default=True, show_default=True, help="Live terminal view.")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".foresight/demo"), show_default=True
)
def demo(n, rate, epochs, live, workdir) -> None:
    """The main job end to end: broker, topics, model, worker, live traffic, summary."""
    import orjson

    from workers.tools.demo import run_demo

    s = _settings()
    ml = s.ml100k_path if (s.ml100k_path / "u.data").exists() else None
    click.echo(f"==> MovieLens-100K: {ml or 'not found (synthetic traffic only)'}")
    result = run_demo(s, n, rate, ml, epochs, live, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "summary.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    click.echo("\nsummary")
    for key, value in result.items():
        click.echo(f"  {key:18} {value}")
    click.echo(f"(also in {workdir / 'summary.json'})")


if __name__ == "__main__":
    main()
