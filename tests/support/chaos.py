"""Chaos for the reliability tests and the long manual run: a replay during which workers are
killed with SIGKILL at random moments, each kill after the pipeline has made some progress."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import Settings
from tests.support.worker_harness import Seen, TopicReader, WorkerProcess, keyed, produce


def with_malformed(events: list[dict], count: int, seed: int) -> tuple[list, set[bytes]]:
    """The events as keyed records with ``count`` malformed ones scattered among them."""
    rng = random.Random(seed)
    stream = keyed(events)
    bad = set()
    for i in range(count):
        raw = b"\xff not json %d" % i if i % 2 else b'{"event_id": "bad%d", "type": "teleport"}' % i
        bad.add(raw)
        stream.insert(rng.randrange(len(stream)), (f"u{i}".encode(), raw))
    return stream, bad


@dataclass
class ChaosRun:
    """What happened: kills done, seconds taken, every prediction record read."""

    kills: int = 0
    seconds: float = 0.0
    predictions: list = field(default_factory=list)
    survivors: list[WorkerProcess] = field(default_factory=list)


async def replay_with_kills(
    settings: Settings,
    stream: list[tuple[bytes | None, bytes]],
    valid_ids: set[str],
    kills: int,
    log_dir: Path,
    seed: int = 0,
    rate: float = 2_000,
    workers: int = 1,
    restart: bool = True,
    progress_between_kills: int = 300,
    timeout: float = 300,
    isolation_level: str = "read_uncommitted",
) -> ChaosRun:
    """Produce ``stream`` at ``rate`` while ``workers`` workers run; ``kills`` times, once
    ``progress_between_kills`` more events are predicted (or all of them, when fewer are left),
    wait a random 0-1.5 s and SIGKILL a random worker (started again at once when ``restart``).
    Returns once every valid event is predicted (as a reader with ``isolation_level`` sees it);
    the caller stops ``survivors``."""
    rng = random.Random(seed)
    began = time.monotonic()
    run = ChaosRun()
    started = 0

    def start() -> WorkerProcess:
        nonlocal started
        started += 1
        return WorkerProcess(settings, log_dir / f"worker-{started}.log").start()

    alive = [start() for _ in range(workers)]
    seen = Seen()
    feed = asyncio.create_task(produce(settings, settings.topic("events"), stream, rate=rate))
    try:
        topic = settings.topic("predictions")
        async with TopicReader(settings, topic, isolation_level=isolation_level) as preds:
            for _ in range(kills):
                # at most every event: when the workers have already predicted nearly all of
                # them, a goal past the total could never be met (CI timed out on 10,034 of
                # 10,000 once); the kill then comes once everything is predicted
                progress = len(seen.update(preds.records)) + progress_between_kills
                goal = min(progress, len(valid_ids))
                await preds.until(lambda r, g=goal: len(seen.update(r)) >= g, timeout, alive)
                await asyncio.sleep(rng.uniform(0, 1.5))
                victim = alive.pop(rng.randrange(len(alive)))
                victim.kill9()
                run.kills += 1
                if restart:
                    alive.append(start())
            await feed
            await preds.until(lambda r: seen.update(r) >= valid_ids, timeout, alive)
            run.predictions = preds.records
    except BaseException:
        for worker in alive:
            worker.stop()
        raise
    finally:
        feed.cancel()
    run.seconds = time.monotonic() - began
    run.survivors = alive
    return run
