"""The main job and the benchmark, end to end on the real broker, in reduced form."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from models import registry
from schemas.settings import Settings
from tests.conftest import _free_port_pair
from tests.support.helpers import labelled_sentences, synthetic_history, tiny_config
from workers.kafka.reach import started_admin
from workers.kafka.topics import create_topics
from workers.tools.bench import pipeline_rate, run_bench
from workers.tools.bench_report import markdown, plot_latency
from workers.tools.demo import run_demo
from workers.tools.generator import Generator
from workers.tools.produce import produce


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().split()
            except OSError:
                continue
            if int(stat[3]) == pid and stat[2] != "Z":
                out.append(int(entry))
    return out


def _topics_named(settings: Settings, part: str) -> set[str]:
    """The broker's topics whose name contains ``part``."""

    async def names() -> set[str]:
        admin = await started_admin(settings)
        try:
            return {t for t in await admin.list_topics() if part in t}
        finally:
            await admin.close()

    return asyncio.run(names())


def test_demo_runs_end_to_end_and_stops_what_it_started(settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(update={"metrics_port": _free_port_pair()})
    monitor_port = _free_port_pair()
    before = set(_children_of(os.getpid()))
    topics_before = _topics_named(s, "demo-")
    sentences = labelled_sentences(tmp_path / "sentences")
    result = run_demo(
        s,
        events=1_500,
        rate=1_000,
        ml100k=None,
        epochs=2,
        live=False,
        workdir=tmp_path,
        text=(sentences, 240),
        monitor_port=monitor_port,
    )
    current = registry.current(s.registry)
    assert current is not None  # it trained a first model, with a sentiment model
    assert "sentiment" in registry.manifest(s.registry, current)
    reviews = result["review_sentiment"]
    assert reviews["rated 4-5"]["texts"] > 0 and reviews["rated 1-2"]["texts"] > 0
    assert result["events_scored"] == 1_500
    assert result["alerts"] > 0 and result["fraud_users"] > 0
    assert result["trends"] >= 0 and result["latency_ms"]["p50"] > 0
    # the monitor page ran beside the worker, on the demo's topics
    log = (tmp_path / "demo-monitor.log").read_text()
    assert f"monitor at http://127.0.0.1:{monitor_port}/" in log and s.topic_prefix in log
    assert set(_children_of(os.getpid())) <= before  # the worker and monitor it started are gone
    assert _topics_named(s, "demo-") == topics_before  # and so are its topics


def test_bench_smoke_json_shape(settings: Settings, tmp_path: Path) -> None:
    from models.pipeline import train_and_register

    version, _ = train_and_register(
        synthetic_history(), settings.registry, tiny_config(), cold_start_share=None
    )
    registry.mark_current(settings.registry, version)
    topics_before = _topics_named(settings, "bench-")
    result = asyncio.run(
        run_bench(
            settings,
            600,
            tmp_path,
            naive_events=200,
            latency_seconds=1.0,
            text_share=0.05,
            load_shares=(0.25, 0.5),
        )
    )
    assert result["raw"]["events_per_s"] > 0
    assert result["pipeline"]["events_per_s"] > 0
    assert set(result["pipeline"]["latency_ms"]) == {"p50", "p95", "p99"}
    assert result["naive"]["events_per_s"] > 0
    assert set(result["ratios"]) == {"pipeline_vs_raw", "pipeline_vs_naive"}
    assert set(result["inference"]["sequences_per_s"]) == {"1", "32", "256", "1024"}
    assert result["pipeline"]["peak_rss_mb"] > 0
    # 600 events may all go by between two looks: costed in the test below on a longer backlog
    if result["pipeline"]["cpu_us_per_event"] is not None:
        assert "CPU per event on the backlog" in markdown(result)
    assert result["machine"]["cores"] >= 1
    assert "| pipeline (1 worker) |" in markdown(result)
    by_second = result["pipeline"]["latency_by_second"]
    assert sum(r["events"] for r in by_second) == result["pipeline"]["latency_events"]
    assert all(r["p50"] <= r["p99"] <= r["max"] for r in by_second)
    # what else used the cores (workers/tools/contention.py), for the run and its first second
    assert 0 <= result["pipeline"]["cpu_share"]["loop_waiting"] <= 1
    assert {"machine_busy", "broker_and_other", "loop_waiting"} <= set(by_second[0])
    assert "Latency run by second: worst p99" in markdown(result)
    text = result["text"]
    assert text["text_share"] == 0.05 and text["events_per_s_ratio"] > 0
    for label in ("without_text", "with_text"):
        assert text[label]["events"] == 600 and text[label]["latency_ms"]["p99"] > 0
    assert "| with text |" in markdown(result)
    curve = result["latency_vs_load"]
    assert [point["share"] for point in curve] == [0.25, 0.5]
    half = result["pipeline"]["offered_events_per_s"]
    assert abs(curve[0]["offered_events_per_s"] - half / 2) <= 0.1
    assert curve[1]["p99"] == result["pipeline"]["latency_ms"]["p99"]  # the headline run
    assert all(0 < point["p50"] <= point["p99"] for point in curve)
    assert "| 25% |" in markdown(result) and "| 50% |" in markdown(result)
    for point in curve:  # the worker and this bench ran on the machine meanwhile
        cpu = point["cpu_share"]
        assert 0 < cpu["machine_busy"] <= 1 and cpu["worker"] > 0 and cpu["bench"] > 0
    assert f"{curve[1]['cpu_share']['machine_busy']:.0%} of " in markdown(result)
    stages = result["pipeline"]["stages_ms"]
    assert list(stages) == ["consume", "batch", "score", "turn", "send", "ack"]
    for stage in stages.values():  # every batch of the timed events passed every stage
        assert stage["batches"] >= 1 and 0 <= stage["p50"] <= stage["p99"]
    assert len({s["batches"] for s in stages.values()}) == 1
    assert "| p99 |" in markdown(result)
    guarantees = result["guarantees"]  # the same backlog in exactly-once mode
    assert guarantees["at_least_once"]["events_per_s"] == result["pipeline"]["events_per_s"]
    assert guarantees["exactly_once"]["events"] == 600
    assert guarantees["exactly_once"]["latency_ms"]["p99"] > 0
    assert guarantees["exactly_once"]["published_latency_ms"]["p99"] > 0
    assert guarantees["events_per_s_ratio"] > 0
    assert "| exactly_once |" in markdown(result)
    plot_latency(result, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _topics_named(settings, "bench-") == topics_before  # its ~100 topics are deleted


def test_bench_costs_each_event_over_the_middle_of_the_backlog(
    settings: Settings, tmp_path: Path
) -> None:
    """CPU per event from the worker's own counters and /proc, over 10-90% of the backlog."""
    from models.pipeline import train_and_register

    version, _ = train_and_register(
        synthetic_history(), settings.registry, tiny_config(), cold_start_share=None
    )
    registry.mark_current(settings.registry, version)
    s = settings.model_copy(update={"store": "memory://"})
    events = [e for e, _ in Generator(seed=3).events(5000)]

    async def run() -> dict:
        await create_topics(s)
        await produce(s, events, len(events), progress=False)
        return await pipeline_rate(s, len(events), tmp_path)

    cost = asyncio.run(run())["cpu_us_per_event"]
    assert 3000 <= cost["events"] <= 5000 and cost["events_per_s"] > 0
    for part in ("event_loop", "ingest", "publish", "scoring_process"):
        assert cost[part] > 0, part
    assert cost["ingest"] + cost["publish"] < cost["event_loop"]
    rest = cost["event_loop"] - cost["ingest"] - cost["publish"]
    assert abs(cost["rest_of_loop"] - rest) <= 0.15  # each figure rounded to 0.1 µs
    assert 1 <= cost["sequences_per_batch"] <= s.batch_size
