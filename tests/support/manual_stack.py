"""What the long manual runs (tests/manual/) stand on: a fresh local broker, settings for it
and a promoted tiny model, all under one working directory."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from models import registry
from models.pipeline import train_and_register
from schemas.settings import Settings
from tests.conftest import _free_port_pair
from tests.support.helpers import synthetic_history, tiny_config
from workers.kafka.topics import create_topics
from workers.tools.local_broker import LocalBroker


async def local_stack(root: Path, app_id: str, **overrides: object) -> tuple[LocalBroker, Settings]:
    """Wipe ``root``, start a broker there, train and promote a tiny model, create the topics.
    The caller stops the broker."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    kafka = LocalBroker(_free_port_pair(), root / "kafka", Settings().home)
    await asyncio.to_thread(kafka.start)
    settings = Settings(
        broker=f"kafka://{kafka.bootstrap}",
        app_id=app_id,
        store="memory://",
        registry=root / "registry",
        data_dir=root / "state",
        broker_port=kafka.port,
        **{"metrics_port": 0, **overrides},  # type: ignore[arg-type]
    )
    version, _ = train_and_register(
        synthetic_history(), settings.registry, tiny_config(), cold_start_share=None
    )
    registry.mark_current(settings.registry, version)
    await create_topics(settings)
    return kafka, settings
