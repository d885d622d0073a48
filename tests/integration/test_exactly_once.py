"""Exactly-once mode against the real broker: a worker killed with SIGKILL three times
mid-replay, and a read_committed reader of its outputs sees each valid event's prediction once,
each alert once, each malformed event's DLQ record once (the same test in at-least-once mode
sees repeats: checked by hand when this was written). And a two-worker group of
which one is killed: the survivor takes its partitions over (a rebalance, with transactions in
flight) and still nothing is seen twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from schemas.settings import Settings
from tests.support.chaos import replay_with_kills, with_malformed
from tests.support.worker_harness import (
    assert_commits_reach_the_end,
    offline_sequences,
    read_all,
    table_from_changelog,
    valid_events,
)
from workers.kafka.topics import create_topics

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
