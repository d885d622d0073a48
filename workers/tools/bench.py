"""``foresight bench``: the raw consume ceiling, the full pipeline and the naive way, measured
in one run against the real broker, reported as JSON and Markdown.

raw       aiokafka reading the input topic as fast as it can (no work per event)
pipeline  one ``foresight worker`` process scoring every event (throughput on a backlog;
          latency at a fixed offered load of half that throughput, overall and per second,
          so a stall of a shared machine shows as one bad second, not a mystery p99)
          and where it goes: the worker's per-stage histograms (workers/metrics.py ``STAGE``)
          over the timed events, and a latency-versus-load curve at shares of the maximum
naive     a Faust agent scoring each event unbatched with the torch model
inference onnxruntime alone, sequences/s by batch size at sequence length 50
text      (with --text-share) the pipeline again on the same events without any text and with
          a share of them carrying a 20-60-word review: events/s and latency side by side
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from models import registry
from models.contract import N_RESERVED_ITEMS
from models.runtime import load_artifact
from models.vocab import Vocab
from schemas.kafka_security import topic_reader
from schemas.settings import Settings
from workers.kafka.topics import create_topics, delete_run_topics
from workers.metrics import LOOP_PARTS, STAGES
from workers.monitor.worker_metrics import histogram_quantile
from workers.tools.bench_report import latency_by_second
from workers.tools.contention import ContentionSampler
from workers.tools.generator import Generator
from workers.tools.produce import produce
from workers.tools.review_text import with_reviews
from workers.tools.worker_processes import (
    ChildProcess,
    WorkerProcess,
    settings_env,
)


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        probe = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        gpu = probe.stdout.strip() or None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version()}


async def _consume_all(
    settings: Settings, topic: str, n: int, timeout: float, child: ChildProcess | None = None
) -> list:
    """Read ``n`` records from ``topic`` (from the start) as a read_committed subscriber
    would (the same as read_uncommitted for outputs published without transactions)."""
    consumer = topic_reader(
        settings, topic, max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024
    )
    await consumer.start()
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{topic}: only {len(records)}/{n} records in {timeout:.0f}s"
                    + (f"\n{child.tail()}" if child else "")
                )
            if child is not None and not child.alive():
                raise RuntimeError(f"process died:\n{child.tail()}")
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def raw_rate(settings: Settings, n: int) -> dict:
    began = time.monotonic()
    await _consume_all(settings, settings.topic("events"), n, 120)
    seconds = time.monotonic() - began
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds, 1)}


def _rate_from(records: list) -> tuple[float, float]:
    """(events/s, seconds) between the first and last output's broker timestamps."""
    stamps = sorted(r.timestamp for r in records)
    seconds = max((stamps[-1] - stamps[0]) / 1000.0, 1e-3)
    return len(records) / seconds, seconds


async def pipeline_rate(settings: Settings, n: int, workdir: Path) -> dict:
    """Events/s of one worker on a backlog of ``n``, its peak RSS, and its CPU per event over
    the middle of the backlog (:func:`cost_per_event`)."""
    port = _free_port()
    worker = WorkerProcess(settings, workdir / "pipeline-worker.log", metrics_port=port).start()
    costing = asyncio.create_task(cost_per_event(worker, port, n))
    try:
        records = await _consume_all(settings, settings.topic("predictions"), n, 600, worker)
        rss = worker.peak_rss_mb()
        cost = await asyncio.wait_for(costing, 5)  # its last look was at most 0.1 s ago
    finally:
        costing.cancel()
        worker.stop()
    rate, seconds = _rate_from(records)
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "events_per_s": round(rate, 1),
        "peak_rss_mb": round(rss, 1) if rss else None,
        "cpu_us_per_event": cost,
    }


#: The worker's batch-size histogram's (sum, count) samples.
BATCH_SIZE_SERIES = (("foresight_batch_size_sum", ()), ("foresight_batch_size_count", ()))
COSTED = (0.1, 0.9)
"""The share of a backlog between which its CPU per event is measured: the steady state, after
the worker has started and before its last partial batches."""


async def cost_per_event(worker: ChildProcess, port: int, n: int) -> dict[str, float] | None:
    """CPU µs per event while the worker consumes the middle of a backlog of ``n`` (from 10%
    to 90% of it, by its own events-in counter): its event loop, split into ``ingest``,
    ``publish`` and the ``rest`` (Faust's per-message machinery, batching, acks, producer
    I/O), its other threads, and the scoring process. None when the whole middle went by
    between two looks (a backlog too short to cost)."""
    interval = min(0.1, max(0.002, n / 500_000))  # 0.1 s on long backlogs, finer on short
    marks: list[tuple[float, dict, dict, float]] = []
    while len(marks) < len(COSTED):
        try:
            samples = await asyncio.to_thread(metric_samples, port)
        except OSError:  # the worker is still starting
            await asyncio.sleep(interval)
            continue
        cpu = worker.cpu_seconds()
        consumed = samples.get(("foresight_events_in_total", ()), 0.0)
        if consumed >= COSTED[len(marks)] * n:
            marks.append((consumed, samples, cpu, time.monotonic()))
        await asyncio.sleep(interval)
    (n0, s0, c0, t0), (n1, s1, c1, t1) = marks
    if n1 <= n0:
        return None
    per_event = 1e6 / (n1 - n0)
    parts = {
        part: (s1.get(key, 0.0) - s0.get(key, 0.0)) * per_event
        for part in LOOP_PARTS
        for key in [("foresight_loop_cpu_seconds_total", (("part", part),))]
    }
    loop = (c1["loop"] - c0["loop"]) * per_event
    batches = [s1.get(k, 0.0) - s0.get(k, 0.0) for k in BATCH_SIZE_SERIES]
    return {
        "events": int(n1 - n0),
        "events_per_s": round((n1 - n0) / max(t1 - t0, 1e-3), 1),  # consumed, meanwhile
        "event_loop": round(loop, 1),
        **{part: round(v, 1) for part, v in parts.items()},
        "rest_of_loop": round(loop - sum(parts.values()), 1),
        "other_threads": round((c1["process"] - c0["process"]) * per_event - loop, 1),
        "scoring_process": round((c1["children"] - c0["children"]) * per_event, 1),
        # per-batch costs are shared by this many events: it moves the loop's cost per event
        "sequences_per_batch": round(batches[0] / batches[1], 1) if batches[1] else None,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_samples(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the worker's metrics page: (name, sorted labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def stage_buckets(port: int) -> dict[str, dict[float, float]]:
    """The worker's per-stage histograms: stage → cumulative count by upper bound."""
    out: dict[str, dict[float, float]] = defaultdict(dict)
    for (name, labels), value in metric_samples(port).items():
        if name == "foresight_stage_seconds_bucket":
            tags = dict(labels)
            out[tags["stage"]][float(tags["le"])] = value
    return out


def stage_latency(before: dict, after: dict) -> dict:
    """p50/p99 in ms of each stage between two scrapes (the batches in between)."""
    out = {}
    for stage in STAGES:
        counts = {b: n - before.get(stage, {}).get(b, 0.0) for b, n in after.get(stage, {}).items()}
        p50, p99 = (histogram_quantile(q, counts) for q in (0.5, 0.99))
        out[stage] = {
            "batches": int(max(counts.values(), default=0)),
            "p50": None if p50 is None else round(1000 * p50, 2),
            "p99": None if p99 is None else round(1000 * p99, 2),
        }
    return out


BROKER_STAMPED = {"predictions": {"message.timestamp.type": "LogAppendTime"}}
"""A latency run's predictions topic: the broker stamps each record with the time it appended
it, so a prediction's timestamp less its event's is produced → on the broker. The worker's own
stamp, taken when it adds the record to a Kafka batch, missed the producer's linger (5 ms) and
the produce request's round trip."""


async def pipeline_latency(
    settings: Settings, events: list[dict], rate: float, workdir: Path
) -> dict:
    """p50/p95/p99 of produce → prediction at a fixed offered load (on topics it creates,
    fresh under ``settings``' prefix), and the worker's per-stage timings of the timed events."""
    created = await create_topics(settings, BROKER_STAMPED)
    if "exists" in created.values():  # the broker would not stamp an existing predictions topic
        raise ValueError(f"latency runs need fresh topics: {settings.topic_prefix}* exist")
    port = _free_port()
    worker = WorkerProcess(settings, workdir / "latency-worker.log", metrics_port=port).start()
    try:
        warm = events[:50]
        await produce(settings, warm, len(warm), progress=False)
        await _consume_all(settings, settings.topic("predictions"), len(warm), 120, worker)
        await asyncio.sleep(0.5)  # the warm-up batches' acks, so that they count before
        before = stage_buckets(port)
        timed = events[50:]
        async with ContentionSampler(worker) as contention:
            await produce(settings, timed, len(timed), rate=rate, progress=False)
        records = await _consume_all(
            settings, settings.topic("predictions"), len(events), 300, worker
        )
        await asyncio.sleep(0.5)  # the last batch's acks land just after its predictions
        stages = stage_latency(before, stage_buckets(port))
        inputs = await _consume_all(settings, settings.topic("events"), len(events), 120)
    finally:
        worker.stop()
    produced_ms = {orjson.loads(r.value)["event_id"]: r.timestamp for r in inputs}
    # By event_id, not by position: the consumer reads partition by partition, so the warm-up
    # predictions (seconds late while the worker started) are not all among the first read.
    warm_ids = {e["event_id"] for e in warm}
    predictions = [(r.timestamp, orjson.loads(r.value)) for r in records]
    timed_records = [(ts, p) for ts, p in predictions if p["event_id"] not in warm_ids]
    latencies = np.array([p["latency_ms"] for _, p in timed_records])
    # each event's own record timestamp (ms), which its prediction's latency also starts from
    produced = np.array([produced_ms[p["event_id"]] for _, p in timed_records], dtype=float)
    # produced → on the broker (BROKER_STAMPED); exactly-once: not the commit after it
    visible = np.array([ts for ts, _ in timed_records], dtype=float) - produced
    by_second = latency_by_second(produced, latencies)
    contention.annotate(by_second, float(produced.min()) / 1000)
    return {
        "offered_events_per_s": round(rate, 1),
        "latency_events": len(timed),
        "latency_ms": _percentiles(latencies),
        "published_latency_ms": _percentiles(visible),
        "latency_by_second": by_second,
        "stages_ms": stages,
        "cpu_share": contention.whole(),
    }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    return {
        p: round(float(np.percentile(values, q)), 2)
        for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
    }


async def naive_rate(settings: Settings, n: int, workdir: Path) -> dict:
    child = ChildProcess(
        ["workers.tools.naive"], settings_env(settings), workdir / "naive.log"
    ).start()
    try:
        records = await _consume_all(
            settings, settings.topic("predictions") + ".naive", n, 900, child
        )
    finally:
        child.stop()
    rate, seconds = _rate_from(records)
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(rate, 1)}


def random_batch(
    vocab: Vocab, size: int, length: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``size`` full sequences of random known items and types: model inputs for timing."""
    return {
        "item_ids": rng.integers(N_RESERVED_ITEMS, vocab.n_items, (size, length)),
        "event_types": rng.integers(1, vocab.n_types, (size, length)),
        "time_gaps": rng.integers(0, 32, (size, length)),
    }


#: Largest [batch, items] float64 block an exact graph may make here (its normaliser's sum): a
#: million-item exact graph at batch 1,024 would need 8 GB for it, and then a few more.
EXACT_LOGITS_BYTES = 2 << 30


def inference(
    directory: Path,
    batch_sizes=(1, 32, 256, 1024),
    length: int = 50,
    budget: float = 1.0,
    precision: str = "auto",
) -> dict:
    """Sequences/s of the graph alone by batch size; an exact graph skips the batch sizes whose
    logits would exceed :data:`EXACT_LOGITS_BYTES` (listed under ``skipped``)."""
    loaded = load_artifact(directory, precision=precision)
    rng = np.random.default_rng(0)
    rates: dict[str, float] = {}
    skipped: list[int] = []
    out = {
        "provider": loaded.provider,
        "precision": loaded.precision,
        "sequence_length": length,
        "sequences_per_s": rates,
        "skipped": skipped,
    }
    exact = loaded.item_index is None  # the loaded artifact already says how it serves
    for b in batch_sizes:
        if exact and b * loaded.vocab.n_items * 8 > EXACT_LOGITS_BYTES:
            skipped.append(b)
            continue
        batch = random_batch(loaded.vocab, b, length, rng)
        loaded.run(batch)
        runs, began = 0, time.perf_counter()
        while time.perf_counter() - began < budget or runs < 2:
            loaded.run(batch)
            runs += 1
        rates[str(b)] = round(b * runs / (time.perf_counter() - began), 1)
    return out


def _fresh(base: Settings, label: str) -> Settings:
    """Topics and a consumer group of their own, for one more measurement in this run."""
    return base.model_copy(
        update={"topic_prefix": f"{base.topic_prefix}{label}.", "app_id": f"{base.app_id}-{label}"}
    )


async def text_comparison(
    base: Settings, events: list[dict], share: float, latency_seconds: float, workdir: Path
) -> dict:
    """The pipeline on ``events`` without text, then with ``share`` of them carrying a review:
    events/s on the backlog, and latency at half the text-free rate, for both."""
    out: dict = {"text_share": share}
    labels = ("without_text", "with_text")
    timed: tuple[list[dict], ...] = ()  # the latency run's events, made once the rate is known
    for label, backlog in zip(labels, with_reviews(events, share), strict=True):
        s = _fresh(base, label)
        await create_topics(s)
        await produce(s, backlog, len(backlog), progress=False)
        pipe = await pipeline_rate(s, len(backlog), workdir)
        if not timed:
            half = pipe["events_per_s"] / 2
            fresh = [e for e, _ in Generator(seed=9).events(50 + int(half * latency_seconds))]
            timed = with_reviews(fresh, share)
        _say(f"{label}: {pipe['events_per_s']:.0f} ev/s; latency at {half:.0f} ev/s")
        lat = _fresh(base, label + "-lat")
        latency = await pipeline_latency(lat, timed[labels.index(label)], half, workdir)
        out[label] = {**pipe, **latency}
    out["events_per_s_ratio"] = round(
        out["with_text"]["events_per_s"] / out["without_text"]["events_per_s"], 4
    )
    return out


async def exactly_once_comparison(
    base: Settings, events: list[dict], at_least_once: dict, latency_seconds: float, workdir: Path
) -> dict:
    """The pipeline again on the same backlog with FORESIGHT_PROCESSING_GUARANTEE=exactly_once
    (fresh topics and group), and its latency at half its own rate, beside ``at_least_once``
    (the headline run)."""
    s = _fresh(base, "eos").model_copy(update={"processing_guarantee": "exactly_once"})
    await create_topics(s)
    await produce(s, events, len(events), progress=False)
    pipe = await pipeline_rate(s, len(events), workdir)
    half = pipe["events_per_s"] / 2
    _say(f"exactly-once {pipe['events_per_s']:.0f} ev/s; latency at {half:.0f} ev/s")
    lat = _fresh(s, "lat")
    timed = [e for e, _ in Generator(seed=10).events(50 + int(half * latency_seconds))]
    latency = await pipeline_latency(lat, timed, half, workdir)
    return {
        "at_least_once": at_least_once,
        "exactly_once": {**pipe, **latency},
        "events_per_s_ratio": round(pipe["events_per_s"] / at_least_once["events_per_s"], 4),
    }


#: Offered loads of the latency-versus-load curve, as shares of the measured maximum.
LOAD_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)


async def load_curve(
    base: Settings,
    max_rate: float,
    shares: tuple[float, ...],
    latency_seconds: float,
    workdir: Path,
    measured: dict[float, dict],
) -> list[dict]:
    """p50/p95/p99 at each offered share of ``max_rate`` (fresh topics and worker each);
    shares already in ``measured`` (the headline run at half the rate) are not run again."""
    points = []
    for n, share in enumerate(sorted(shares)):
        if share not in measured:
            rate = share * max_rate
            _say(f"latency at {share:.0%} of the maximum: {rate:.0f} ev/s offered")
            s = _fresh(base, f"load{round(share * 100)}")
            events = [e for e, _ in Generator(seed=20 + n).events(50 + int(rate * latency_seconds))]
            measured[share] = await pipeline_latency(s, events, rate, workdir)
        run = measured[share]
        points.append(
            {
                "share": share,
                "offered_events_per_s": run["offered_events_per_s"],
                "latency_events": run["latency_events"],
                **run["latency_ms"],
                "stages_p99_ms": {k: v["p99"] for k, v in run["stages_ms"].items()},
                "cpu_share": run["cpu_share"],
            }
        )
    return points


async def run_bench(
    settings: Settings,
    n: int,
    workdir: Path,
    naive_events: int | None = None,
    latency_seconds: float = 10.0,
    text_share: float | None = None,
    load_shares: tuple[float, ...] = LOAD_SHARES,
) -> dict:
    """The whole bench, each measurement on fresh topics; all of them deleted at the end."""
    version = registry.current(settings.registry)
    if version is None:
        raise SystemExit(f"no CURRENT model in {settings.registry}: run `foresight train` first")
    run_id = uuid.uuid4().hex[:8]
    base = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}bench-{run_id}.",
            "app_id": f"bench-{run_id}",
            "store": "memory://",
            "metrics_port": 0,
        }
    )
    try:
        return await _measure(
            settings,
            base,
            version,
            n,
            workdir,
            naive_events,
            latency_seconds,
            text_share,
            load_shares,
        )
    finally:  # every measurement's topics extend base's prefix and app id
        try:
            deleted = await delete_run_topics(base)
            _say(f"deleted this run's {len(deleted)} topics")
        except Exception as exc:  # a broker gone mid-run: its error, not this one, is the news
            _say(f"could not delete this run's topics ({base.topic_prefix}*): {exc!r}")


async def _measure(
    settings: Settings,
    base: Settings,
    version: str,
    n: int,
    workdir: Path,
    naive_events: int | None,
    latency_seconds: float,
    text_share: float | None,
    load_shares: tuple[float, ...],
) -> dict:
    """The measurements of ``run_bench``, on topics under ``base``'s prefix."""
    await create_topics(base)
    events = [e for e, _ in Generator(seed=7).events(n)]
    _say(f"producing {n} events to {base.topic('events')}")
    await produce(base, events, n, progress=False)
    _say("raw consume rate")
    raw = await raw_rate(base, n)
    _say(f"raw {raw['events_per_s']:.0f} ev/s; pipeline on the backlog")
    pipe = await pipeline_rate(base, n, workdir)
    _say(f"pipeline {pipe['events_per_s']:.0f} ev/s; latency at half that rate")
    half = pipe["events_per_s"] / 2
    lat_settings = _fresh(base, "lat")
    lat_events = [e for e, _ in Generator(seed=8).events(50 + int(half * latency_seconds))]
    latency = await pipeline_latency(lat_settings, lat_events, half, workdir)
    curve = await load_curve(
        base, pipe["events_per_s"], load_shares, latency_seconds, workdir, {0.5: latency}
    )
    _say("the pipeline in exactly-once mode on the same backlog")
    guarantees = await exactly_once_comparison(
        base, events, {**pipe, **latency}, latency_seconds, workdir
    )
    n_naive = min(n, naive_events or n)
    _say(f"naive per-event agent on {n_naive} events")
    naive = await naive_rate(base, n_naive, workdir)
    _say("onnxruntime alone")
    infer = inference(settings.registry / version, precision=settings.scoring_precision)
    result = {
        "events": n,
        "model_version": version,
        "scoring_precision": infer["precision"],  # the graph the worker and this bench served
        "machine": machine(),
        "raw": raw,
        "pipeline": {**pipe, **latency},
        "latency_vs_load": curve,
        "guarantees": guarantees,
        "naive": naive,
        "ratios": {
            "pipeline_vs_raw": round(pipe["events_per_s"] / raw["events_per_s"], 4),
            "pipeline_vs_naive": round(pipe["events_per_s"] / naive["events_per_s"], 2),
        },
        "inference": infer,
    }
    if text_share:
        _say(f"the pipeline without text and with {text_share:.0%} of events carrying a review")
        result["text"] = await text_comparison(base, events, text_share, latency_seconds, workdir)
    return result
