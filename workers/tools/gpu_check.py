"""The GPU path, measured: the exported model under each GPU provider onnxruntime offers
(TensorRT, CUDA) at batches of 1 to 4,096, its outputs against the CPU provider's, and the
bench's scoring stage on the provider the worker would pick.

Prepared to run as is on a machine with an NVIDIA GPU (``deploy/gpu-check.sh``); it brings its
own model (trained on synthetic traffic) unless given one. Without a GPU it says so and exits 3;
``--cpu-only`` runs the same measurements on the CPU provider as a dry run.

    python -m workers.tools.gpu_check [--model DIR] [--out gpu-results] [--cpu-only]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from models.onnx_session import gpu_present, session_on

NO_GPU = 3
BATCHES = (1, 64, 256, 1024, 4096)
LENGTH = 50  # events per timed sequence
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None


def quick_model(workdir: Path) -> Path:
    """A small model trained on synthetic traffic, so the check needs no data set."""
    from models.data import load
    from models.pipeline import train_and_register
    from models.train import TrainConfig
    from workers.tools.generator import Generator

    events = workdir / "events.jsonl"
    with open(events, "wb") as fh:
        for event, _ in Generator(users=500, items=2_000, seed=0).events(20_000):
            fh.write(orjson.dumps(event) + b"\n")
    version, _ = train_and_register(
        load(f"jsonl:{events}"), workdir / "registry", TrainConfig(epochs=2, progress=False), None
    )
    return workdir / "registry" / version


def session(model: Path, provider: str):
    """(session on ``provider``, None) or (None, why there is none)."""
    try:
        return session_on(model / "model.onnx", provider), None
    except RuntimeError as exc:
        return None, str(exc)


def timings(s, batch: dict[str, np.ndarray], budget: float) -> dict:
    """Milliseconds per batch (p50, p99) and sequences per second, after warm-up runs (the
    TensorRT provider builds an engine per new shape on the first)."""
    for _ in range(3):
        s.run(None, batch)
    took: list[float] = []
    began = time.perf_counter()
    while time.perf_counter() - began < budget or len(took) < 5:
        start = time.perf_counter()
        s.run(None, batch)
        took.append(time.perf_counter() - start)
    n = len(batch["item_ids"])
    return {
        "ms_p50": round(1000 * float(np.percentile(took, 50)), 3),
        "ms_p99": round(1000 * float(np.percentile(took, 99)), 3),
        "sequences_per_s": round(n * len(took) / sum(took), 1),
    }


def agreement(s, cpu, batch: dict[str, np.ndarray]) -> dict:
    """How far a provider's outputs are from the CPU provider's on the same batch."""
    names = [o.name for o in cpu.get_outputs()]  # exact or candidate graph alike
    got = dict(zip(names, s.run(names, batch), strict=True))
    want = dict(zip(names, cpu.run(names, batch), strict=True))
    diffs = {
        n: float(np.max(np.abs(got[n].astype(np.float64) - want[n]))) if got[n].size else 0.0
        for n in names
        if got[n].dtype.kind == "f"
    }
    if "top_items" not in got:  # a candidate graph: top-k comes from the item index
        return {"max_abs_diff": diffs}
    return {
        "max_abs_diff": diffs,
        "top_items_equal_share": float(np.mean(got["top_items"] == want["top_items"])),
    }


def measure(model: Path, providers: list[str], batches=BATCHES, budget: float = 2.0) -> dict:
    from models.vocab import Vocab
    from workers.tools.bench import inference, random_batch

    vocab = Vocab.load(model / "vocab.json", texts=False)  # random batches need ids only
    rng = np.random.default_rng(0)
    cpu, _ = session(model, "CPUExecutionProvider")
    report: dict = {
        "gpu": gpu_name(),
        "machine": platform.platform(),
        "model": str(model),
        "sequence_length": LENGTH,
        "providers": {},
    }
    for provider in providers:
        s, why = session(model, provider)
        if s is None:
            report["providers"][provider] = {"unavailable": why}
            continue
        entry: dict = {"batches": {}}
        for n in batches:
            entry["batches"][str(n)] = timings(s, random_batch(vocab, n, LENGTH, rng), budget)
        entry["versus_cpu"] = agreement(s, cpu, random_batch(vocab, 64, LENGTH, rng))
        report["providers"][provider] = entry
    # the bench's scoring stage, on the provider the worker itself picks here
    report["scoring_stage"] = inference(model, batch_sizes=batches, budget=budget)
    return report


def markdown(report: dict) -> str:
    lines = [
        f"GPU: {report['gpu'] or 'none found'}; sequences of {report['sequence_length']} events",
        "",
        "| provider | batch | ms p50 | ms p99 | sequences/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for provider, entry in report["providers"].items():
        if "unavailable" in entry:
            lines.append(f"| {provider} | unavailable: {entry['unavailable'][:80]} | | | |")
            continue
        for n, t in entry["batches"].items():
            lines.append(
                f"| {provider} | {n} | {t['ms_p50']} | {t['ms_p99']} | {t['sequences_per_s']:,} |"
            )
    stage = report["scoring_stage"]
    lines += ["", f"Scoring stage on {stage['provider']}: " + ", ".join(
        f"batch {n}: {rate:,} sequences/s" for n, rate in stage["sequences_per_s"].items()
    )]  # fmt: skip
    for provider, entry in report["providers"].items():
        if "versus_cpu" in entry:
            v = entry["versus_cpu"]
            worst = max(v["max_abs_diff"].values())
            lines.append(
                f"{provider} against CPU: largest output difference {worst:.2e}, top items "
                f"equal in {v['top_items_equal_share']:.1%} of places"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="A registry version directory.")
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--cpu-only", action="store_true", help="Dry run on the CPU provider.")
    parser.add_argument("--budget", type=float, default=2.0, help="Seconds per batch size.")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    args = parser.parse_args(argv)
    import onnxruntime as ort

    if args.cpu_only:
        providers = ["CPUExecutionProvider"]
    elif not gpu_present():
        print("no GPU here (no /dev/nvidia0, no NVIDIA driver): nothing measured", file=sys.stderr)
        return NO_GPU
    else:
        offered = set(ort.get_available_providers())
        providers = [p for p in GPU_PROVIDERS if p in offered] + ["CPUExecutionProvider"]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or quick_model(Path(tmp))
        batches = tuple(int(b) for b in args.batches.split(","))
        report = measure(model, providers, batches, args.budget)
    (args.out / "gpu-check.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (args.out / "gpu-check.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
