"""Creates and lists the topics of DESIGN.md, idempotently, with the right shape.

``models.control`` is compacted with one partition (its latest ``current`` record is the truth);
``catalog`` is compacted (an item's latest record is the truth; every worker reads all of it);
every other topic gets the configured partition count, so parallelism is a setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from schemas.settings import TOPIC_BASES, Settings
from workers.kafka.reach import started_admin

COMPACTED = ("models.control", "catalog")
"""Topics whose latest record per key is the truth."""


@dataclass(frozen=True)
class TopicSpec:
    """The shape one topic must have."""

    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(
    settings: Settings, configs: dict[str, dict[str, str]] | None = None
) -> list[TopicSpec]:
    """Every topic Foresight uses, with its partitions and config; ``configs`` adds to the
    config of the topics it names (by base name, e.g. ``predictions``)."""
    specs = []
    for base in TOPIC_BASES:
        partitions = 1 if base == "models.control" else settings.partitions
        config = {"cleanup.policy": "compact"} if base in COMPACTED else {}
        config |= (configs or {}).get(base, {})
        specs.append(TopicSpec(settings.topic(base), partitions, config))
    return specs


async def create_topics(
    settings: Settings, configs: dict[str, dict[str, str]] | None = None
) -> dict[str, str]:
    """Create missing topics (``configs`` as in ``topic_specs``: it applies only to the topics
    created here); returns name → 'created' or 'exists'."""
    admin = await started_admin(settings)
    try:
        existing = set(await admin.list_topics())
        outcome: dict[str, str] = {}
        for spec in topic_specs(settings, configs):
            if spec.name in existing:
                outcome[spec.name] = "exists"
                continue
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        spec.partitions,
                        settings.replication_factor,
                        topic_configs=spec.config,
                    )
                ]
            )
            code = response.topic_errors[0][1]  # (name, error_code, message)
            if code == TopicAlreadyExistsError.errno:  # stale metadata or a concurrent creator
                outcome[spec.name] = "exists"
            elif code:
                raise for_code(code)(f"creating {spec.name}: {response.topic_errors[0]}")
            else:
                outcome[spec.name] = "created"
        return outcome
    finally:
        await admin.close()


async def delete_run_topics(settings: Settings) -> list[str]:
    """Delete a bench or demo run's topics: those under its ``topic_prefix`` and Faust's for its
    ``app_id`` (changelogs, assignor), and so those of every run derived from it by extending
    both; returns the names deleted.

    Each run makes a few hundred partitions, and left behind they fill the broker: a
    development broker with ~16,000 of them ran out of heap at start-up."""
    if not settings.topic_prefix:
        raise ValueError("a run without a topic prefix of its own: that would delete every topic")
    prefixes = (settings.topic_prefix, f"{settings.app_id}-")
    admin = await started_admin(settings)
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefixes))
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def list_topics(settings: Settings) -> dict[str, int | None]:
    """Foresight's topics → partition count (None when missing)."""
    admin = await started_admin(settings)
    try:
        names = [spec.name for spec in topic_specs(settings)]
        present = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in names if n in present])
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        return {name: counts.get(name) for name in names}
    finally:
        await admin.close()
