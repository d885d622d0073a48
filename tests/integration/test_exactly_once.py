"""Exactly-once mode against the real broker: a worker killed with SIGKILL three times
mid-replay, and a read_committed reader of its outputs sees each valid event's prediction once,
each alert once, each malformed event's DLQ record once (the same test in at-least-once mode
sees repeats: checked by hand when this was written). And a two-worker group of
which one is killed: the survivor takes its partitions over (a rebalance, with transactions in
flight) and still nothing is seen twice. And a zombie: a worker whose transactional id another
producer took exits for a restart instead of writing on."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings
from tests.support.chaos import replay_with_kills, with_malformed
from tests.support.worker_harness import (
    TopicReader,
    assert_commits_reach_the_end,
    event_ids,
    keyed,
    offline_sequences,
    produce,
    read_all,
    table_from_changelog,
    valid_events,
)
from workers.kafka.publisher import EXIT_CANNOT_PUBLISH
from workers.kafka.topics import create_topics
from workers.tools.worker_processes import WorkerProcess

COMMITTED = {"isolation_level": "read_committed"}


async def assert_each_output_once(s: Settings, events: list[dict], malformed: set[bytes]) -> None:
    """What a read_committed reader sees: one prediction per valid event, the DLQ records of
    the malformed ones once each, the commits at the end, the table as computed offline."""
    await assert_commits_reach_the_end(s)
    predictions = await read_all(s, s.topic("predictions"), **COMMITTED)
    per_event = Counter(orjson.loads(r.value)["event_id"] for r in predictions)
    assert set(per_event) == {e["event_id"] for e in events}
    assert per_event.most_common(1)[0][1] == 1, per_event.most_common(3)
    dead = [r.value for r in await read_all(s, s.topic("events.dlq"), **COMMITTED)]
    assert sorted(dead) == sorted(malformed)
    assert await table_from_changelog(s, **COMMITTED) == offline_sequences(events, s)


async def test_three_kills_and_every_output_is_seen_once(served: Settings, tmp_path: Path) -> None:
    s = served.model_copy(
        update={
            "processing_guarantee": "exactly_once",
            "session_timeout_seconds": 10,  # the restarted worker rejoins without a 60 s wait
            "risk_threshold": 0.0,  # every event raises a fraud alert: each must appear once
            "alert_cooldown_seconds": 0.0,
        }
    )
    await create_topics(s)
    events = valid_events(6_000, users=400, seed=53)
    stream, malformed = with_malformed(events, 20, seed=53)
    valid = {e["event_id"] for e in events}
    run = await replay_with_kills(
        s, stream, valid, kills=3, log_dir=tmp_path, seed=53, isolation_level="read_committed"
    )
    try:
        assert run.kills == 3
        await assert_each_output_once(s, events, malformed)
        alerts = [orjson.loads(r.value) for r in await read_all(s, s.topic("alerts"), **COMMITTED)]
        per_alert = Counter((a["event_id"], a["kind"]) for a in alerts)
        assert {event_id for event_id, kind in per_alert if kind == "fraud_risk"} == valid
        assert per_alert.most_common(1)[0][1] == 1, per_alert.most_common(3)
    finally:
        for worker in run.survivors:
            worker.stop()


async def test_a_killed_group_member_is_taken_over_without_duplicates(
    served: Settings, tmp_path: Path
) -> None:
    s = served.model_copy(
        update={"processing_guarantee": "exactly_once", "session_timeout_seconds": 10}
    )
    await create_topics(s)
    events = valid_events(4_000, users=300, seed=54)
    stream, malformed = with_malformed(events, 10, seed=54)
    valid = {e["event_id"] for e in events}
    run = await replay_with_kills(
        s,
        stream,
        valid,
        kills=1,
        log_dir=tmp_path,
        seed=54,
        rate=1_000,
        workers=2,
        restart=False,
        isolation_level="read_committed",
    )
    try:
        assert run.kills == 1 and len(run.survivors) == 1  # the survivor fenced the dead one
        await assert_each_output_once(s, events, malformed)
    finally:
        for worker in run.survivors:
            worker.stop()


async def test_a_fenced_worker_exits_and_its_successor_sees_each_output_once(
    served: Settings, tmp_path: Path
) -> None:
    """A zombie: another producer takes partition 0's transactional id while the worker is
    mid-stream (what the next owner of the partition does), so the worker's next transaction
    there is refused; it exits for a restart, saying why, and nothing it had not committed
    is seen."""
    s = served.model_copy(update={"processing_guarantee": "exactly_once"})
    await create_topics(s)
    events = valid_events(4_000, users=300, seed=55)
    feed = asyncio.create_task(produce(s, s.topic("events"), keyed(events), rate=500))
    log = tmp_path / "worker.log"
    worker = WorkerProcess(s, log).start()
    try:
        async with TopicReader(s, s.topic("predictions"), **COMMITTED) as preds:
            await preds.until(lambda r: len(r) >= 500, 120, [worker])
        usurper = AIOKafkaProducer(**aiokafka_kwargs(s), transactional_id=f"{s.app_id}-eos-0")
        await usurper.start()  # fences the worker's producer of partition 0
        began = time.monotonic()
        while worker.alive() and time.monotonic() - began < 60:
            await asyncio.sleep(0.5)
        code = worker.proc.poll() if worker.proc else None
        await usurper.stop()
    finally:
        worker.stop()
    assert code == EXIT_CANNOT_PUBLISH, (code, worker.tail())
    said = worker.tail(20_000)
    # the whole log when not. aiokafka words a fence many ways, and when the worker's commit
    # races the usurper's abort the broker may answer EndTxn with UNKNOWN_SERVER_ERROR (seen
    # once in four runs; apache/kafka KAFKA-20785 is a race of the same kind): the worker then
    # names the transaction that failed and the broker's error, which is all it knows
    named = f"transaction {s.app_id}-eos-0 failed" in said and "UnknownError" in said
    assert "fenced" in said or named, said
    worker = WorkerProcess(s, log).start()  # what the orchestrator does next
    try:
        await feed
        valid = {e["event_id"] for e in events}
        async with TopicReader(s, s.topic("predictions"), **COMMITTED) as preds:
            await preds.until(lambda r: event_ids(r) >= valid, 180, [worker])
        await assert_each_output_once(s, events, set())
    finally:
        worker.stop()
        feed.cancel()
