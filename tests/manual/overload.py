"""Overload, by hand (issue #12 item 7): measure one worker's maximum on a backlog, then offer
twice that for two minutes, sampling the worker's memory and consumer lag every second.

    .venv/bin/python -m tests.manual.overload [WORKDIR] [--seconds 120] [--factor 2]

Prints the measured maximum, the rate actually offered, peak RSS of the worker and of its
scoring process, the highest lag, how long the lag took to drain after the offer stopped, and
whether every event was predicted. Kept out of `make test`: it takes several minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import urllib.request
from pathlib import Path

from tests.conftest import _free_port_pair
from tests.support.manual_stack import local_stack
from tests.support.processes import scoring_child
from tests.support.worker_harness import (
    Seen,
    TopicReader,
    WorkerProcess,
    assert_commits_reach_the_end,
    keyed,
    produce,
    valid_events,
)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def lag(port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return int(
        sum(float(v) for v in re.findall(r"^foresight_consumer_lag\{.*\} (\S+)$", text, re.M))
    )


async def main(root: Path, seconds: float, factor: float) -> None:
    port = _free_port_pair()
    kafka, s = await local_stack(root, "overload", metrics_port=port)
    worker = None
    try:
        backlog = valid_events(40_000, users=2_000, seed=8, prefix="a")
        await produce(s, s.topic("events"), keyed(backlog))
        worker = WorkerProcess(s, root / "worker.log").start()
        seen = Seen()
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(seen.update(r)) >= 2_000, 120, [worker])
            began, start_count = time.monotonic(), len(seen.ids)
            await preds.until(lambda r: len(seen.update(r)) >= len(backlog), 300, [worker])
            maximum = (len(seen.ids) - start_count) / (time.monotonic() - began)
            print(f"maximum on a backlog: {maximum:,.0f} events/s", flush=True)

            offered = int(maximum * factor)
            flood = valid_events(int(offered * seconds), users=2_000, seed=9, prefix="b")
            child = scoring_child(worker.pid)
            samples: list[tuple[float, float, float, int]] = []
            feed = asyncio.create_task(produce(s, s.topic("events"), keyed(flood), rate=offered))
            began = time.monotonic()
            while not feed.done() or lag(port) > 0:
                await preds.poll()
                seen.update(preds.records)
                samples.append(
                    (time.monotonic() - began, rss_mb(worker.pid), rss_mb(child), lag(port))
                )
                await asyncio.sleep(1.0)
            await feed
            total = set(e["event_id"] for e in backlog + flood)
            await preds.until(lambda r: seen.update(r) >= total, 600, [worker])
            drained = time.monotonic() - began
        offer_took = len(flood) / offered
        feed_end = next((t for t, *_ in samples if t >= offer_took), drained)
        peak = max(samples, key=lambda x: x[3])
        print(f"offered {offered:,}/s for {offer_took:.0f} s ({len(flood):,} events)")
        print(
            f"highest lag {peak[3]:,} at {peak[0]:.0f} s; all predicted {drained:.0f} s after "
            f"the offer began ({drained - feed_end:.0f} s after it ended)"
        )
        print(
            f"worker RSS max {max(x[1] for x in samples):.0f} MB (high-water "
            f"{rss_mb(worker.pid, 'VmHWM'):.0f} MB); scoring process max "
            f"{max(x[2] for x in samples):.0f} MB (high-water {rss_mb(child, 'VmHWM'):.0f} MB)"
        )
        print(
            "RSS at 10/50/90% of the run: "
            + ", ".join(f"{samples[int(len(samples) * q)][1]:.0f}" for q in (0.1, 0.5, 0.9))
        )
        print(f"every event predicted: {seen.ids >= total}")
        await assert_commits_reach_the_end(s, timeout=60)
        print("commits at the end of every partition")
    finally:
        if worker:
            worker.stop()
        await asyncio.to_thread(kafka.stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root", nargs="?", default="/tmp/foresight-overload")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--factor", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(Path(args.root), args.seconds, args.factor))
