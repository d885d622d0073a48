"""Chaos against the real broker: workers killed with SIGKILL at random moments mid-replay,
alone and in a group. Every valid event predicted, the table equal to an offline computation
from the input, the DLQ holding the malformed events and nothing else. (The broker bounced
twice mid-stream is tests/integration/test_broker_outage.py; the long run,
tests/manual/chaos_replay.py.)"""

from __future__ import annotations

from pathlib import Path

from schemas.settings import Settings
from tests.support.chaos import replay_with_kills, with_malformed
from tests.support.worker_harness import (
    assert_commits_reach_the_end,
    event_ids,
    offline_sequences,
    read_all,
    table_from_changelog,
    valid_events,
)
from workers.kafka.topics import create_topics


async def assert_outcome(s: Settings, events: list[dict], run, malformed: set[bytes]) -> None:
    assert event_ids(run.predictions) == {e["event_id"] for e in events}
    await assert_commits_reach_the_end(s)
    assert await table_from_changelog(s) == offline_sequences(events, s)
    assert {r.value for r in await read_all(s, s.topic("events.dlq"))} == malformed


async def test_five_kills_at_random_moments(served: Settings, tmp_path: Path) -> None:
    s = served.model_copy(update={"session_timeout_seconds": 10})  # rejoin without a 60 s wait
    await create_topics(s)
    events = valid_events(10_000, users=500, seed=51)
    stream, malformed = with_malformed(events, 40, seed=51)
    valid = {e["event_id"] for e in events}
    run = await replay_with_kills(s, stream, valid, kills=5, log_dir=tmp_path, seed=51)
    try:
        assert run.kills == 5
        await assert_outcome(s, events, run, malformed)
    finally:
        for worker in run.survivors:
            worker.stop()


async def test_a_killed_group_member_is_taken_over(served: Settings, tmp_path: Path) -> None:
    s = served.model_copy(update={"session_timeout_seconds": 10})
    await create_topics(s)
    events = valid_events(5_000, users=400, seed=52)
    stream, malformed = with_malformed(events, 20, seed=52)
    valid = {e["event_id"] for e in events}
    run = await replay_with_kills(
        s, stream, valid, kills=1, log_dir=tmp_path, seed=52, rate=1_000, workers=2, restart=False
    )
    try:
        assert run.kills == 1 and len(run.survivors) == 1  # the survivor did the rest alone
        await assert_outcome(s, events, run, malformed)
    finally:
        for worker in run.survivors:
            worker.stop()
