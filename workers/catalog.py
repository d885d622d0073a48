"""``foresight catalog publish FILE``: the shop's catalog onto the compacted ``catalog`` topic.

The file is read by :func:`schemas.files.read_catalog`: every row is validated first, and a file
with invalid rows is refused with their line numbers, so nothing is published and a
half-published catalog never happens by accident.
"""

from __future__ import annotations

from schemas.kafka_security import aiokafka_kwargs
from schemas.records import CatalogItem
from schemas.settings import Settings


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
