"""``foresight catalog publish FILE``: the shop's catalog onto the compacted ``catalog`` topic.

JSONL (one :class:`~schemas.records.CatalogItem` per line) or CSV (a header row naming
``item_id``, ``title`` and optionally ``category``, ``description``; other columns become
``attrs``). Every row is validated first; a file with invalid rows is refused with their line
numbers and nothing is published, so a half-published catalog never happens by accident.
"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
from pydantic import ValidationError

from schemas.kafka_security import aiokafka_kwargs
from schemas.records import CatalogItem
from schemas.settings import Settings

CATALOG_FIELDS = ("item_id", "title", "category", "description")


class CatalogFileError(ValueError):
    """Rows that are not catalog items; the message lists them."""


def _rows(path: Path):
    """(line number, raw row dict) for each row of a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                attrs = {k: v for k, v in row.items() if k not in CATALOG_FIELDS and v}
                fields = {k: row[k] for k in CATALOG_FIELDS if row.get(k)}
                yield line, {**fields, "attrs": attrs}
        return
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if raw.strip():
                try:
                    yield line, orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    yield line, exc


def read_catalog(path: Path, max_errors: int = 10) -> list[CatalogItem]:
    """Every item of ``path``; raises :class:`CatalogFileError` if any row is invalid."""
    items: list[CatalogItem] = []
    errors: list[str] = []
    bad = 0
    for line, row in _rows(path):
        try:
            if isinstance(row, Exception):
                raise ValueError(f"not JSON: {row}")
            items.append(CatalogItem.model_validate(row))
        except (ValidationError, ValueError) as exc:
            bad += 1
            if len(errors) < max_errors:
                errors.append(f"line {line}: {str(exc).splitlines()[0]}")
    if bad:
        raise CatalogFileError(
            f"{path}: {bad} invalid rows, nothing published\n" + "\n".join(errors)
        )
    return items


async def publish_catalog(settings: Settings, items: list[CatalogItem]) -> int:
    """Send every item (key = item_id) and wait until the broker has them all."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**aiokafka_kwargs(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        topic = settings.topic("catalog")
        futures = [
            await producer.send(
                topic, item.model_dump_json(exclude_none=True).encode(), key=item.item_id.encode()
            )
            for item in items
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(items)
