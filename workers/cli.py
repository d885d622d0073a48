"""The ``foresight`` command: broker, topics, worker, training, models, traffic and benchmarks.

Commands import their heavy dependencies (torch, Faust) only when they run, so ``foresight
broker status`` stays instant and the worker image never needs torch.
"""

from __future__ import annotations

import asyncio
import sys

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


def _local_broker():
    from workers.local_broker import LocalBroker

    s = _settings()
    return LocalBroker(
        port=s.broker_port, state_dir=s.home / f"broker-{s.broker_port}", jar_cache=s.home
    )


@broker.command("start")
def broker_start() -> None:
    """Fetch jars once, format storage once, start, and wait until it answers."""
    from workers.local_broker import BrokerError

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
    from workers.local_broker import answers

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
    from workers.topics import create_topics

    for name, outcome in asyncio.run(create_topics(_settings())).items():
        click.echo(f"{outcome:8} {name}")


@topics.command("list")
def topics_list() -> None:
    """Show Foresight's topics and their partition counts."""
    from workers.topics import list_topics

    for name, parts in asyncio.run(list_topics(_settings())).items():
        click.echo(f"{name:32} {'missing' if parts is None else f'{parts} partitions'}")


# --- demo ---------------------------------------------------------------------------------------
@main.command()
def demo() -> None:
    """The main job end to end on this machine: local broker (unless FORESIGHT_BROKER points at
    another cluster), topics, then the pipeline stages that exist."""
    from workers.local_broker import BrokerError
    from workers.topics import create_topics

    s = _settings()
    if s.bootstrap_servers == [f"127.0.0.1:{s.broker_port}"]:
        b = _local_broker()
        try:
            took = b.start()
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"==> broker at {b.bootstrap} (ready in {took:.1f}s)")
    for name, outcome in asyncio.run(create_topics(s)).items():
        click.echo(f"==> topic {name}: {outcome}")


if __name__ == "__main__":
    main()
