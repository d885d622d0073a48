"""Odd-but-valid and malformed events through a real worker and broker: nothing stops a
partition. Each valid event is predicted, each malformed one is dead-lettered once with its
stage, the agent never crashes, and every partition's commit point reaches the end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson

from models.vocab import EVENT_TYPES
from schemas.records import MAX_TS, MIN_TS
from schemas.settings import Settings
from tests.support.worker_harness import (
    TopicReader,
    WorkerProcess,
    assert_commits_reach_the_end,
    event_ids,
    keyed,
    offline_sequences,
    produce,
    read_all,
    table_from_changelog,
    valid_events,
)
from workers.kafka.topics import create_topics

WIDE = "😀" * 128  # 128 characters, 512 bytes: at the schema's limit


def odd_but_valid(count: int) -> list[dict]:
    """Valid events at the extremes of their bounds: what crashed the agent before."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        etype = EVENT_TYPES[i % len(EVENT_TYPES)]
        event = {
            "event_id": f"{i:03d}" + WIDE[3:] if i % 2 else f"odd{i}-" + "é" * 100,
            "user_id": f"{i % 5}" + WIDE[1:] if i % 3 else f"u{rng.randrange(50)}",
            "type": etype,
            "ts": [MIN_TS, MAX_TS, 1_700_000_000.25][i % 3],
        }
        if i % 4:  # every type with and without an item
            event["item_id"] = WIDE if i % 4 == 1 else str(rng.randrange(30))
        if i % 6 == 0:
            event.update(text="<script>" + "😀" * 1990, attrs={"category": "é" * 256, "n": 2**62})
        out.append(event)
    return out


def malformed() -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, expected DLQ stage)."""

    def event(**fields: object) -> bytes:
        return orjson.dumps({"event_id": "m", "user_id": "u1", "type": "view", "ts": 2e9, **fields})

    nan = json.dumps({"event_id": "m1", "user_id": "u1", "type": "view", "ts": float("nan")})
    return [
        (b"u1", b'{"event_id":"m0","pad":"' + b"a" * 1_000_000 + b'"}', "decode"),
        (b"u1", nan.encode(), "decode"),  # NaN is not JSON
        (b"u1", b"[" * 100_000, "decode"),
        (b"u1", None, "decode"),  # a tombstone
        (b"u2", event(), "validate"),  # keyed by another user
        (b"u1", event(event_id="x" * 129), "validate"),
        (b"u1", event(ts=MAX_TS + 1), "validate"),
        (b"u1", event(attrs={"a": {"b": 1}}), "validate"),
    ]


async def test_odd_and_malformed_events_never_stop_a_partition(
    served: Settings, tmp_path: Path
) -> None:
    s = served
    await create_topics(s)
    normal, odd = valid_events(3_000, users=200, seed=11), odd_but_valid(120)
    bad = malformed()
    stream: list[tuple[bytes | None, bytes | None]] = keyed(normal)
    rng = random.Random(3)
    for item in [*keyed(odd), *((k, v) for k, v, _ in bad)]:
        stream.insert(rng.randrange(len(stream)), item)
    await produce(s, s.topic("events"), stream)

    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            expected = {e["event_id"] for e in normal + odd}
            await preds.until(lambda r: event_ids(r) >= expected, 120, [worker])
        await assert_commits_reach_the_end(s)
        dlq = await read_all(s, s.topic("events.dlq"))
    finally:
        worker.stop()
    assert event_ids(preds.records) == expected
    stages = sorted(dict(r.headers)["dlq.stage"].decode() for r in dlq)
    assert stages == sorted(stage for _, _, stage in bad)
    big = next(r for r in dlq if r.value and r.value.startswith(b'{"event_id":"m0"'))
    assert int(dict(big.headers)["dlq.value.truncated.from"]) > 1_000_000
    log = worker.tail(200_000)
    assert "Traceback" not in log and "crash" not in log.lower(), log[-3000:]
    assert await table_from_changelog(s) == offline_sequences(stream_events(stream), s)


def stream_events(stream: list[tuple[bytes | None, bytes | None]]) -> list[dict]:
    """The valid events of the stream, in the order produced."""
    from schemas.codec import InvalidRecord, decode_event

    out = []
    for key, value in stream:
        try:
            event = decode_event(value)
        except InvalidRecord:
            continue
        if key == event.user_id.encode():
            out.append(orjson.loads(value))
    return out
