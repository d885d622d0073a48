"""10,000 events through the real broker with the schemas codec: all intact, in per-key order."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import Event, EventType, decode_event, encode
from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings
from workers.kafka.topics import create_topics

N_EVENTS = 10_000
N_USERS = 200


def _events(n: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    types = list(EventType)
    out = []
    for i in range(n):
        etype = rng.choice(types)
        out.append(
            Event(
                event_id=f"e{i}",
                user_id=f"u{rng.randrange(N_USERS)}",
                type=etype,
                ts=1_700_000_000 + i,
                item_id=f"i{rng.randrange(500)}",
                price=round(rng.uniform(1, 500), 2) if etype is EventType.PURCHASE else None,
                rating=rng.randint(1, 5) if etype is EventType.RATING else None,
                text="great héllo ✓" if etype is EventType.REVIEW else None,
                attrs={"k": i},
            )
        )
    return out


async def test_ten_thousand_events_arrive_intact_in_key_order(settings: Settings) -> None:
    await create_topics(settings)
    topic = settings.topic("events")
    sent = _events(N_EVENTS)

    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings), acks="all", linger_ms=5, enable_idempotence=True
    )
    await producer.start()
    try:
        batch = [producer.send(topic, encode(e), key=e.user_id.encode()) for e in sent]
        await asyncio.gather(*[await f for f in batch])
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_kwargs(settings),
        group_id=settings.app_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[Event] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < N_EVENTS:
                records = await consumer.getmany(timeout_ms=1000)
                for tp_records in records.values():
                    for r in tp_records:
                        event = decode_event(r.value)
                        assert r.key == event.user_id.encode()
                        received.append(event)
    finally:
        await consumer.stop()

    assert len(received) == N_EVENTS
    assert {e.event_id: e for e in received} == {e.event_id: e for e in sent}
    per_user_sent: dict[str, list[str]] = defaultdict(list)
    per_user_received: dict[str, list[str]] = defaultdict(list)
    for e in sent:
        per_user_sent[e.user_id].append(e.event_id)
    for e in received:
        per_user_received[e.user_id].append(e.event_id)
    assert per_user_received == per_user_sent
