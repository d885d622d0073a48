"""The developer tools' commands (``foresight broker|generate|replay|bench|demo``), added
to the ``foresight`` command by workers/cli.py when workers/tools is installed (the worker
image leaves it out)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from models.commands import path_option
from schemas.settings import Settings, settings_or_exit

commands = click.Group("tools")


# --- broker -------------------------------------------------------------------------------------
@commands.group()
def broker() -> None:
    """The local single-node Apache Kafka used for development, tests, demo and bench."""


def _local_broker(s: Settings | None = None):
    from workers.tools.local_broker import for_settings

    return for_settings(s or settings_or_exit())


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


# --- traffic ------------------------------------------------------------------------------------
@commands.command()
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
@path_option("--out", "Write JSONL here (default: produce to the events topic).")
@path_option("--labels", "Write per-event fraud labels (JSONL) here.")
@path_option(
    "--catalog-out",
    "Write the whole catalog here (JSONL, for `train --catalog` and `catalog publish`).",
)
def generate(n, users, items, fraud_rate, seed, out, labels, catalog_out) -> None:
    """Synthetic e-commerce events with labelled fraud, deterministic by seed."""
    import contextlib

    import orjson
    from rich.progress import Progress

    from workers.tools.generator import Generator
    from workers.tools.produce import produce

    generator = Generator(users, items, fraud_rate, seed)
    if catalog_out:
        with open(catalog_out, "wb") as fh:
            for item in generator.items:
                fh.write(orjson.dumps(item.catalog_row()) + b"\n")
        click.echo(f"wrote {len(generator.items)} catalog items to {catalog_out}")
    pairs = generator.events(n)
    frauds = written = 0
    kept: list[dict] = []  # only when producing: a file is written as the events come
    with contextlib.ExitStack() as stack:
        events_out = stack.enter_context(open(out, "wb")) if out else None
        labels_out = stack.enter_context(open(labels, "wb")) if labels else None
        progress = stack.enter_context(Progress(transient=True, disable=n < 200_000))
        task = progress.add_task("generating", total=n)
        for e, pattern in pairs:
            frauds += pattern is not None
            written += 1
            if written % 10_000 == 0:
                progress.update(task, completed=written)
            if labels_out:
                labels_out.write(
                    orjson.dumps(
                        {
                            "event_id": e["event_id"],
                            "fraud": pattern is not None,
                            "pattern": pattern,
                        }
                    )
                    + b"\n"
                )
            if events_out:
                events_out.write(orjson.dumps(e) + b"\n")
            else:
                kept.append(e)
    if out:
        click.echo(f"wrote {written} events to {out}")
    else:
        stats = asyncio.run(produce(settings_or_exit(), kept, len(kept)))
        click.echo(f"produced {stats.sent} events in {stats.seconds:.1f}s")
    click.echo(f"{frauds} fraud events ({frauds / max(written, 1):.1%})")


@commands.command("replay")
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
    from workers.tools.produce import produce, source_events

    events, total = source_events(source, limit, seed)
    stats = asyncio.run(produce(settings_or_exit(), events, total, rate, speedup))
    click.echo(f"replayed {stats.sent} events in {stats.seconds:.1f}s ({stats.rate:.0f} ev/s)")


# --- bench --------------------------------------------------------------------------------------
@commands.command()
@click.option("--events", "n", type=int, default=50_000, show_default=True)
@click.option("--naive-events", type=int, default=5_000, help="Events for the naive run.")
@click.option("--latency-seconds", type=float, default=15.0, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=Path("bench-results/bench.json"),
    show_default=True,
)
@click.option(
    "--text-share",
    type=float,
    default=None,
    help="Also run the pipeline without text and with this share of events carrying a "
    "20-60-word review (e.g. 0.02), and report both.",
)
@click.option(
    "--load-curve",
    default="0.1,0.25,0.5,0.75,0.9",
    show_default=True,
    help="Offered loads, as shares of the measured maximum, for the latency-versus-load "
    "curve (empty: only the headline run at 0.5).",
)
def bench(n, naive_events, latency_seconds, json_path, text_share, load_curve) -> None:
    """raw consume vs full pipeline vs naive per-event scoring, on the real broker."""
    import orjson

    from workers.tools.bench import run_bench
    from workers.tools.bench_report import markdown, plot_latency

    s = settings_or_exit()
    started = _ensure_local_broker(s)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(
            run_bench(
                s,
                n,
                json_path.parent,
                naive_events,
                latency_seconds,
                text_share,
                tuple(float(x) for x in load_curve.split(",") if x.strip()),
            )
        )
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
@commands.command()
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
@click.option(
    "--sentiment-sentences",
    type=int,
    default=16_000,
    show_default=True,
    help="Labelled sentences the quick first model's sentiment model is fine-tuned on (about "
    "3 minutes here; `foresight train --sentiment` uses all of them).",
)
@click.option("--live/--no-live", default=True, show_default=True, help="Live terminal view.")
@click.option(
    "--monitor-port",
    type=click.IntRange(0, 65535),
    default=8089,
    show_default=True,
    help="Port of the live monitor page started beside the worker (0: none).",
)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".foresight/demo"), show_default=True
)
def demo(n, rate, epochs, sentiment_sentences, live, monitor_port, workdir) -> None:
    """The main job end to end: broker, topics, model, worker, live traffic, summary."""
    import orjson

    from workers.tools.demo import run_demo

    s = settings_or_exit()
    ml = s.ml100k_path if (s.ml100k_path / "u.data").exists() else None
    click.echo(f"==> MovieLens-100K: {ml or 'not found (synthetic traffic only)'}")
    sst2 = s.sst2_path if (s.sst2_path / "train.tsv").exists() else None
    click.echo(f"==> labelled sentences: {sst2 or 'not found (lexicon sentiment)'}")
    text = (sst2, sentiment_sentences) if sst2 else None
    result = run_demo(s, n, rate, ml, epochs, live, workdir, text, monitor_port)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "summary.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    click.echo("\nsummary")
    for key, value in result.items():
        click.echo(f"  {key:18} {value}")
    click.echo(f"(also in {workdir / 'summary.json'})")


# --- screenshot ---------------------------------------------------------------------------------
@commands.command()
@click.argument("url")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait-for", default=None, help="CSS selector to wait for before the shot.")
@click.option("--seconds", default=2.0, show_default=True, help="Extra wait for live updates.")
def screenshot(url: str, out: Path, wait_for: str | None, seconds: float) -> None:
    """A full-page PNG of a page (e.g. the monitor) in the system's headless Chromium."""
    from workers.tools.browser import BrowserMissing
    from workers.tools.browser import screenshot as take

    try:
        problems = asyncio.run(take(url, str(out), wait_for, seconds))
    except BrowserMissing as exc:
        raise click.ClickException(str(exc)) from None
    for line in problems:
        click.echo(f"page: {line}", err=True)
    click.echo(f"saved {out}")
