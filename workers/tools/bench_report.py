"""How ``foresight bench`` reports its results: per-second latency, the Markdown table and
the latency plot."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import numpy as np


def latency_by_second(produced_ms: np.ndarray, latency_ms: np.ndarray) -> list[dict]:
    """p50/p99/max per second of produce time (epoch ms), from the first event produced."""
    second = ((produced_ms - produced_ms.min()) // 1000).astype(int)
    rows = []
    for s in range(int(second.max()) + 1):
        chosen = latency_ms[second == s]
        if chosen.size:
            rows.append(
                {
                    "second": s,
                    "events": int(chosen.size),
                    "p50": round(float(np.percentile(chosen, 50)), 1),
                    "p99": round(float(np.percentile(chosen, 99)), 1),
                    "max": round(float(chosen.max()), 1),
                }
            )
    return rows


LATENCY_BAR_MS = 50.0
"""The p99 a fraud alert should meet (worth most in its first tens of milliseconds)."""
DISTURBED_OTHERS_CORES = 0.5
"""Cores used by neither the worker nor the load generator during the latency run, on
average, above which the report calls the run disturbed: another bench or a test suite on the
same machine took 0.8-1.2, the broker alone 0.1-0.15 (0.25-0.8 while its JIT warms up)."""


def plot_latency(result: dict, path: Path) -> None:
    """The latency run second by second, against the p99 bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["pipeline"]["latency_by_second"]
    seconds = [r["second"] for r in rows]
    curve = result.get("latency_vs_load") or []
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(13 if curve else 8, 3.5), squeeze=False)
    ax = axes[0, 0]
    for key in ("p50", "p99", "max"):
        ax.plot(seconds, [r[key] for r in rows], marker=".", label=key)
    ax.axhline(LATENCY_BAR_MS, color="grey", linestyle=":", label=f"{LATENCY_BAR_MS:.0f} ms")
    ax.set_xlabel("second of the latency run (by produce time)")
    ax.set_ylabel("end-to-end latency, ms")
    ax.set_title(
        f"one worker at {result['pipeline']['offered_events_per_s']:,.0f} events/s offered"
    )
    ax.legend(loc="upper left")
    sampled = _sampled(rows)
    if sampled:
        shares = ax.twinx()
        for key, color, label in (
            ("loop_waiting", "tab:red", "event loop waiting for a core"),
            ("broker_and_other", "tab:purple", "the broker's and others' CPU"),
        ):
            shares.plot(
                [r["second"] for r in sampled],
                [100 * r[key] for r in sampled],
                color=color,
                linestyle="--",
                label=label,
            )
        shares.set_ylabel("% of one core")
        shares.set_ylim(bottom=0)
        shares.legend(loc="upper right", fontsize=8)
    if curve:
        right = axes[0, 1]
        offered = [point["offered_events_per_s"] for point in curve]
        for key in ("p50", "p99"):
            right.plot(offered, [point[key] for point in curve], marker="o", label=key)
        for point in curve:
            right.annotate(
                f"{point['share']:.0%}, {point['cpu_share']['machine_busy']:.0%} busy",
                (point["offered_events_per_s"], point["p99"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
        right.set_xlabel("offered events/s (share of the measured maximum)")
        right.set_ylabel("end-to-end latency, ms")
        right.set_yscale("log")  # queueing past the knee would flatten the rest
        right.margins(x=0.1)  # room for the first and last points' labels
        right.set_title("latency against load")
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict) -> str:
    p, r, n = result["pipeline"], result["raw"], result["naive"]
    lat, on_broker = p["latency_ms"], p["published_latency_ms"]
    lines = [
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"GPU: {result['machine']['gpu'] or 'none'}; model {result['model_version']} "
        f"({result.get('scoring_precision', 'fp32')} graph); "
        f"{result['events']} events.",
        "",
        "| run | events/s | p50 ms | p95 ms | p99 ms | notes |",
        "|---|---:|---:|---:|---:|---|",
        f"| raw (aiokafka consume) | {r['events_per_s']:,.0f} | | | | the ceiling |",
        f"| pipeline (1 worker) | {p['events_per_s']:,.0f} | {lat['p50']} | {lat['p95']} | "
        f"{lat['p99']} | latency at {p['offered_events_per_s']:,.0f} ev/s offered, to the "
        f"prediction built (on the broker: p50 {on_broker['p50']}, p99 {on_broker['p99']}); "
        f"peak RSS {p['peak_rss_mb']} MB |",
        f"| naive (per-event torch in Faust) | {n['events_per_s']:,.0f} | | | | "
        f"{n['events']} events |",
        "",
        f"pipeline/raw = {result['ratios']['pipeline_vs_raw']:.3f}, "
        f"pipeline/naive = {result['ratios']['pipeline_vs_naive']:.1f}x",
        "",
        _worst_second(p["latency_by_second"]),
        "",
        "| ONNX batch | " + " | ".join(result["inference"]["sequences_per_s"]) + " |",
        "|---|" + "---:|" * len(result["inference"]["sequences_per_s"]),
        "| sequences/s | "
        + " | ".join(f"{v:,.0f}" for v in result["inference"]["sequences_per_s"].values())
        + " |",
    ]
    if result["inference"].get("skipped"):
        sizes = ", ".join(str(b) for b in result["inference"]["skipped"])
        lines += ["", f"Batch sizes {sizes} skipped: the exact graph's logits would not fit."]
    if p.get("cpu_us_per_event"):
        lines += ["", _cost_line(p["cpu_us_per_event"])]
    if p.get("stages_ms"):
        lines += ["", *_stage_rows(p["stages_ms"])]
    if result.get("latency_vs_load"):
        lines += ["", *_load_rows(result["latency_vs_load"], result["machine"]["cores"])]
    if "guarantees" in result:
        lines += ["", *_guarantee_rows(result["guarantees"])]
    if "text" in result:
        lines += ["", *_text_rows(result["text"])]
    return "\n".join(lines) + "\n"


def _cost_line(cost: dict) -> str:
    """CPU per event on the backlog, where the event loop's share goes."""
    per_batch = cost.get("sequences_per_batch")  # absent from JSON of older benches
    return (
        f"CPU per event on the backlog (the middle {cost['events']:,} events): event loop "
        f"{cost['event_loop']} µs (ingest {cost['ingest']}, publish {cost['publish']}, Faust "
        f"and the rest {cost['rest_of_loop']}), the worker's other threads "
        f"{cost['other_threads']} µs, the scoring process {cost['scoring_process']} µs"
        + (f"; {per_batch} sequences a scoring batch." if per_batch else ".")
    )


def _stage_rows(stages: dict) -> list[str]:
    """Where the latency run's time went, stage by stage (one sample per batch)."""
    names = list(stages)
    return [
        "Where the time goes in the latency run (the worker's per-stage histograms, oldest "
        "event of each batch; bucket-interpolated):",
        "",
        "| ms | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        *(
            f"| {q} | " + " | ".join(f"{stages[n][q]}" for n in names) + " |"
            for q in ("p50", "p99")
        ),
    ]


def _guarantee_rows(guarantees: dict) -> list[str]:
    """At-least-once against exactly-once (transactions), each on the same backlog."""
    rows = [
        "Processing guarantee (same backlog; latency at half of each mode's own rate: "
        "`built` is the prediction's own latency_ms, produced → outputs built; `published` is "
        "produced → appended by the broker (exactly-once: after the wait for a transaction, "
        "before its commit)):",
        "",
        "| mode | events/s | offered | built p50 / p99 ms | published p50 / p99 ms | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in ("at_least_once", "exactly_once"):
        run = guarantees[mode]
        built, published = run["latency_ms"], run["published_latency_ms"]
        rows.append(
            f"| {mode} | {run['events_per_s']:,.0f} | {run['offered_events_per_s']:,.0f} | "
            f"{built['p50']} / {built['p99']} | {published['p50']} / {published['p99']} | "
            f"{run['peak_rss_mb']} |"
        )
    return [*rows, "", f"exactly-once/at-least-once = {guarantees['events_per_s_ratio']:.3f}"]


def _load_rows(curve: list[dict], cores: int) -> list[str]:
    """The latency-versus-load curve as a table."""
    rows = [
        "Latency against offered load (a fresh worker and topics at each load):",
        "",
        "| offered | events/s | p50 ms | p95 ms | p99 ms | machine busy | worker / scoring / "
        "bench / broker and other, cores |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in curve:
        cpu = point["cpu_share"]
        rows.append(
            f"| {point['share']:.0%} | {point['offered_events_per_s']:,.0f} | {point['p50']} "
            f"| {point['p95']} | {point['p99']} | {cpu['machine_busy']:.0%} of {cores} "
            f"| {cpu['worker']:.2f} / {cpu['scoring_process']:.2f} / {cpu['bench']:.2f} / "
            f"{cpu['broker_and_other']:.2f} |"
        )
    rows += [
        "",
        "Machine busy: all cores, whatever ran on them, while the timed events were produced; "
        "the tail grows with the queueing for a core.",
    ]
    return rows


def _text_rows(text: dict) -> list[str]:
    """The with/without-text comparison as a table."""
    rows = [
        f"Pipeline with {text['text_share']:.0%} of events carrying a 20-60-word review, against "
        f"the same events without text (ratio {text['events_per_s_ratio']:.3f}):",
        "",
        "| run | events/s | p50 ms | p99 ms | offered ev/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("without_text", "with_text"):
        x = text[label]
        rows.append(
            f"| {label.replace('_', ' ')} | {x['events_per_s']:,.0f} | {x['latency_ms']['p50']} "
            f"| {x['latency_ms']['p99']} | {x['offered_events_per_s']:,.0f} |"
        )
    return rows


def _worst_second(rows: list[dict]) -> str:
    worst = max(rows, key=lambda r: r["p99"])
    slow = sum(r["p99"] > LATENCY_BAR_MS for r in rows)
    line = (
        f"Latency run by second: worst p99 {worst['p99']:,.1f} ms (second {worst['second']} "
        f"of {len(rows)}); {slow} of {len(rows)} seconds had p99 over {LATENCY_BAR_MS:.0f} ms."
    )
    return " ".join([line, *_contention(rows)])


def _contention(rows: list[dict]) -> list[str]:
    """What else used the cores in the slow seconds against the rest, and whether anything
    disturbed the run (workers/tools/contention.py); nothing for rows without the figures."""
    sampled = _sampled(rows)
    over = [r for r in sampled if r["p99"] > LATENCY_BAR_MS]
    rest = [r for r in sampled if r["p99"] <= LATENCY_BAR_MS]
    said = []
    if over and rest:
        said.append(
            f"In those seconds {_means(over)}; in the others {_means(rest)} (the worker's"
            " event loop waiting for a core, the machine's cores in use, and the cores used by"
            " neither the worker nor the load generator: the broker, here)."
        )
    others = fmean(r["broker_and_other"] for r in sampled) if sampled else 0.0
    if others > DISTURBED_OTHERS_CORES:
        said.append(
            f"**Disturbed:** something besides the worker and the load generator used"
            f" {others:.2f} cores on average during this run (the broker alone takes ~0.1-0.15"
            " at half load here); its latency does not describe the worker."
        )
    return said


def _sampled(rows: list[dict]) -> list[dict]:
    """The seconds that carry contention figures (workers/tools/contention.py): a last
    part-second, or a run from before the figures, has none."""
    return [r for r in rows if "loop_waiting" in r]


def _means(rows: list[dict]) -> str:
    mean = {
        k: fmean(r[k] for r in rows) for k in ("loop_waiting", "machine_busy", "broker_and_other")
    }
    return (
        f"the loop waited {mean['loop_waiting']:.0%} of the time, {mean['machine_busy']:.0%} "
        f"busy, {mean['broker_and_other']:.2f} cores to others"
    )
