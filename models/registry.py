"""The model registry: versioned artifact directories, a CURRENT pointer, and announcements.

``<registry>/<version>/{model.onnx, manifest.json, vocab.json, report.json, report.png}``.
Artifacts are written to a temporary directory and renamed into place, so a reader never sees
half a model; promotion verifies first, then swaps CURRENT atomically, then announces the
version on ``models.control`` when a broker is configured. No torch here.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson

from models.runtime import LoadedModel, load_artifact
from schemas.codec import encode
from schemas.records import ModelAnnouncement

CURRENT = "CURRENT"


def new_version() -> str:
    """Sortable, unique: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def write_json(path: Path, obj: object) -> None:
    path.write_bytes(
        orjson.dumps(
            obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
        )
    )


def publish(registry: Path, version: str, staging: Path) -> Path:
    """Move a fully written staging directory to ``<registry>/<version>`` in one rename."""
    target = registry / version
    if target.exists():
        raise FileExistsError(f"version {version} already exists")
    registry.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target


def staging_dir(registry: Path, version: str) -> Path:
    path = registry / f".staging-{version}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def versions(registry: Path) -> list[str]:
    """Every published version, oldest first."""
    if not registry.is_dir():
        return []
    return sorted(
        p.name
        for p in registry.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").exists()
    )


def manifest(registry: Path, version: str) -> dict:
    return orjson.loads((registry / version / "manifest.json").read_bytes())


def current(registry: Path) -> str | None:
    """The promoted version, if any."""
    try:
        return (registry / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def verify(registry: Path, version: str, precision: str = "auto") -> LoadedModel:
    """Load the artifact exactly as a worker with ``precision`` would (raises ModelRefused)."""
    return load_artifact(registry / version, precision=precision)


def mark_current(registry: Path, version: str) -> None:
    tmp = registry / f".{CURRENT}.{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, registry / CURRENT)


def announcement(registry: Path, version: str) -> ModelAnnouncement:
    path = (registry / version).resolve()
    return ModelAnnouncement(
        version=version, uri=path.as_uri(), sha256=manifest(registry, version)["sha256"]
    )


async def announce(settings, record: ModelAnnouncement) -> None:
    """Publish the record on the compacted ``models.control`` topic, key ``current``."""
    from aiokafka import AIOKafkaProducer

    from schemas.kafka_security import aiokafka_kwargs

    producer = AIOKafkaProducer(**aiokafka_kwargs(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("models.control"), encode(record), key=b"current"
        )
    finally:
        await producer.stop()


def promote(registry: Path, version: str, settings=None) -> ModelAnnouncement:
    """Verify, mark current, and announce when ``settings`` names a broker."""
    verify(registry, version)
    mark_current(registry, version)
    record = announcement(registry, version)
    if settings is not None:
        asyncio.run(announce(settings, record))
    return record
