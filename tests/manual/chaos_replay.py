"""The long chaos run of issue #12: 200,000 events (with 200 malformed) replayed into a worker
that is killed with SIGKILL at 10 random moments and started again each time.

    .venv/bin/python -m tests.manual.chaos_replay [WORKDIR] [--events N] [--kills K] [--rate R]

Prints the time taken, kills, predictions read (with how many were repeats: at-least-once
re-sends what a killed worker published but had not committed), whether every valid event
was predicted, whether the commits reached the end, whether the table equals the offline
reference, and whether the DLQ holds exactly the malformed events. Peak RSS of each worker
is not tracked (each is killed). Kept out of `make test`: it takes several minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson

from tests.support.chaos import replay_with_kills, with_malformed
from tests.support.manual_stack import local_stack
from tests.support.worker_harness import (
    assert_commits_reach_the_end,
    offline_sequences,
    read_all,
    table_from_changelog,
    valid_events,
)


async def main(root: Path, n_events: int, kills: int, rate: float) -> None:
    # a killed worker's partitions move on after 10 s, not 60
    kafka, s = await local_stack(root, "chaos", session_timeout_seconds=10)
    try:
        events = valid_events(n_events, users=n_events // 40, seed=7)
        stream, malformed = with_malformed(events, n_events // 1000, seed=7)
        valid = {e["event_id"] for e in events}
        print(
            f"{len(valid):,} valid + {len(malformed)} malformed events, {kills} kills", flush=True
        )
        run = await replay_with_kills(
            s,
            stream,
            valid,
            kills=kills,
            log_dir=root,
            seed=7,
            rate=rate,
            progress_between_kills=max(300, n_events // (kills + 2)),
            timeout=900,
        )
        began = time.monotonic()
        try:
            await assert_commits_reach_the_end(s, timeout=60)
        finally:
            for worker in run.survivors:
                worker.stop()
        reached = time.monotonic() - began
        counts = Counter(orjson.loads(r.value)["event_id"] for r in run.predictions)
        print(f"{run.seconds:.0f} s, {run.kills} kills", flush=True)
        print(
            f"predictions read {len(run.predictions):,}; distinct {len(counts):,}; "
            f"repeats {len(run.predictions) - len(counts):,} "
            f"({sum(1 for n in counts.values() if n > 1):,} events predicted more than once)"
        )
        print(f"every valid event predicted: {set(counts) == valid}")
        print(f"commits at the end of every partition ({reached:.0f} s after the last prediction)")
        print(
            f"table equals the offline reference: "
            f"{await table_from_changelog(s) == offline_sequences(events, s)}"
        )
        dlq = await read_all(s, s.topic("events.dlq"))
        print(
            f"DLQ records {len(dlq)}; exactly the malformed set: "
            f"{ {r.value for r in dlq} == malformed }"
        )
    finally:
        await asyncio.to_thread(kafka.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", default="/tmp/foresight-chaos")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=4_000)
    args = parser.parse_args()
    asyncio.run(main(Path(args.root), args.events, args.kills, args.rate))
