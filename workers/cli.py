"""The ``foresight`` command: the worker and its topics, plus the trainer's commands and, where
installed, the developer tools' (workers/tools/commands.py).

Commands import their heavy dependencies (torch, Faust) only when they run, so ``foresight
broker status`` stays instant and the worker image never needs torch.
"""

from __future__ import annotations

import asyncio
import importlib.util

import click

from models.commands import commands as trainer_commands
from schemas.settings import settings_or_exit


@click.group()
def main() -> None:
    """Foresight: streaming next-action prediction, fraud alerts and trends on Kafka."""


@main.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run one stream worker (start more for more partitions; they share one consumer group)."""
    from workers.app import run_worker
    from workers.kafka.topics import create_topics

    s = settings_or_exit()
    asyncio.run(create_topics(s))
    run_worker(s, loglevel)


@main.group()
def topics() -> None:
    """Foresight's Kafka topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic idempotently (configured partitions; models.control compacted)."""
    from workers.kafka.topics import create_topics

    for name, outcome in asyncio.run(create_topics(settings_or_exit())).items():
        click.echo(f"{outcome:8} {name}")


@topics.command("list")
def topics_list() -> None:
    """Show Foresight's topics and their partition counts."""
    from workers.kafka.topics import list_topics

    for name, parts in asyncio.run(list_topics(settings_or_exit())).items():
        click.echo(f"{name:32} {'missing' if parts is None else f'{parts} partitions'}")


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
