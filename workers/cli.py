"""The ``foresight`` command: the worker and its topics, plus the trainer's commands and, where
installed, the developer tools' (workers/tools/commands.py).

Commands import their heavy dependencies (torch, Faust) only when they run, so ``foresight
broker status`` stays instant and the worker image never needs torch.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from models.commands import commands as trainer_commands
from schemas.settings import settings_or_exit

T = TypeVar("T")


@click.group()
def main() -> None:
    """Foresight: streaming next-action prediction, fraud alerts and trends on Kafka."""


def run_on_cluster(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a cluster that cannot be used ends the command with one line saying why
    (wrong password, untrusted certificate, nothing listening), not a traceback."""
    from workers.kafka.reach import ClusterUnreachable

    try:
        return asyncio.run(work)
    except ClusterUnreachable as exc:
        raise SystemExit(f"Error: {exc}") from None


@main.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run one stream worker (start more for more partitions; they share one consumer group)."""
    from workers.app import run_worker
    from workers.kafka.topics import create_topics

    s = settings_or_exit()
    run_on_cluster(create_topics(s))
    run_worker(s, loglevel)


@main.group()
def topics() -> None:
    """Foresight's Kafka topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic idempotently (configured partitions; models.control compacted)."""
    from workers.kafka.topics import create_topics

    for name, outcome in run_on_cluster(create_topics(settings_or_exit())).items():
        click.echo(f"{outcome:8} {name}")


@topics.command("list")
def topics_list() -> None:
    """Show Foresight's topics and their partition counts."""
    from workers.kafka.topics import list_topics

    for name, parts in run_on_cluster(list_topics(settings_or_exit())).items():
        click.echo(f"{name:32} {'missing' if parts is None else f'{parts} partitions'}")


@main.command()
@click.option(
    "--registry",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Registry directory (default FORESIGHT_REGISTRY).",
)
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
def sentiment(registry: Path | None, file) -> None:
    """Score one text a line (FILE or stdin) with the served model: one number in [-1, 1] a
    line, or an empty line where the lexicon fallback finds no opinion."""
    from models import registry as models_registry
    from models.runtime import ModelRefused
    from workers.scoring.scorer import OnnxScorer

    directory = registry or settings_or_exit().registry
    version = models_registry.current(directory)
    if version is None:
        raise click.ClickException(f"no CURRENT model in {directory}: run `foresight train`")
    try:
        scorer = OnnxScorer.from_directory(directory / version, max_length=1, threads=1)
    except ModelRefused as exc:
        raise click.ClickException(f"model {version} refused: {exc}") from None
    kind = "language model" if scorer.loaded.sentiment else "opinion-word lexicon (fallback)"
    click.echo(f"model {version}: sentiment from its {kind}", err=True)
    lines = [line.rstrip("\n") for line in file]
    for start in range(0, len(lines), 256):
        chunk = dict(enumerate(lines[start : start + 256]))
        for value in scorer.sentiment(chunk, len(chunk)).tolist():
            click.echo("" if value != value else f"{value:.4f}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8089, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--metrics",
    "metrics_urls",
    multiple=True,
    help="A worker's /metrics URL; repeat once per worker "
    "[default: http://127.0.0.1:FORESIGHT_METRICS_PORT/metrics].",
)
@click.option(
    "--backlog",
    default=2000,
    show_default=True,
    type=click.IntRange(0),
    help="Records per partition of trends and alerts read from before the start.",
)
def monitor(host: str, port: int, metrics_urls: tuple[str, ...], backlog: int) -> None:
    """Serve the live monitor page (read-only): trends with their sentiment, alerts with
    their reasons, and the workers' throughput, latency, lag and model version."""
    from workers.monitor.app import Monitor, run_monitor

    s = settings_or_exit()
    urls = list(metrics_urls) or [f"http://127.0.0.1:{s.metrics_port}/metrics"]
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: binding {host}: the page has no login; anyone who can reach it sees "
            "user ids and review texts (it writes nothing)",
            err=True,
        )
    click.echo(
        f"monitor at http://{host}:{port}/ (topics {s.topic('trends')}, {s.topic('alerts')})"
    )
    run_monitor(Monitor(s, urls, backlog=backlog), host, port)


@main.group()
def catalog() -> None:
    """The shop's catalog: items that become rankable from their text."""


@catalog.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def catalog_publish(file: Path) -> None:
    """Validate FILE (JSONL or CSV) and publish every item to the compacted catalog topic."""
    from schemas.files import CatalogFileError, read_catalog
    from workers.catalog import publish_catalog
    from workers.kafka.topics import create_topics

    s = settings_or_exit()
    try:
        items = read_catalog(file)
    except CatalogFileError as exc:
        raise click.ClickException(f"{exc}\nnothing published") from None
    asyncio.run(create_topics(s))
    sent = asyncio.run(publish_catalog(s, items))
    click.echo(f"published {sent} items to {s.topic('catalog')}")


def _add_commands() -> None:
    """The trainer's commands always; the tools' only where workers/tools is installed."""
    groups = [trainer_commands]
    if importlib.util.find_spec("workers.tools") is not None:
        from workers.tools.commands import commands as tool_commands

        groups.append(tool_commands)
    for group in groups:
        for name, command in group.commands.items():
            main.add_command(command, name)


_add_commands()

if __name__ == "__main__":
    main()
