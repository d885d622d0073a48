"""Training history replayed from a real topic, and promotion announced on models.control."""

from __future__ import annotations

import asyncio

import orjson

from models import registry
from models.data import load
from schemas.codec import decode
from schemas.records import ModelAnnouncement
from schemas.settings import Settings
from tests.support.helpers import tiny_model
from tests.support.worker_harness import produce, read_all
from workers.kafka.topics import create_topics


async def test_topic_replay_reads_everything_once(settings: Settings) -> None:
    await create_topics(settings)
    events = [
        {
            "event_id": f"h{i}",
            "user_id": f"u{i % 7}",
            "type": "view",
            "ts": 1_700_000_000 + i,
            "item_id": str(i % 5),
        }
        for i in range(500)
    ]
    raw = [(e["user_id"].encode(), orjson.dumps(e)) for e in events]
    await produce(settings, settings.topic("events"), [*raw, (b"u1", b"not json")])
    history = await asyncio.to_thread(load, "topic:events", settings)
    assert sorted(x.event_id for x in history.interactions) == sorted(e["event_id"] for e in events)
    assert history.source == f"topic:{settings.topic('events')}"


async def test_promote_announces_on_models_control(settings: Settings) -> None:
    await create_topics(settings)
    version = await asyncio.to_thread(tiny_model, settings.registry)
    record = await asyncio.to_thread(registry.promote, settings.registry, version, settings)
    [message] = await read_all(settings, settings.topic("models.control"))
    assert message.key == b"current"
    announced = decode(ModelAnnouncement, message.value)
    assert announced == record and announced.version == version
    assert registry.current(settings.registry) == version
