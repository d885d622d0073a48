"""A catalog of a million items, by hand (issue #13 item 4): generate 5M synthetic events over
1,000,000 items and 100,000 users and the catalog file of those items, then train one epoch
with the sampled softmax on the events and the whole catalog (Zipf draws touch only about a
third of the items; the catalog brings in the rest, ranked by their titles), reporting the
time and peak RSS of each stage. With ``--registry``, the trained network is exported there as
the CURRENT version (candidate serving: an item index over the catalog), so that
``foresight bench`` can serve it.

    .venv/bin/python -m tests.manual.big_catalog [WORKDIR] [--events 5000000] [--items 1000000]
        [--registry DIR]

Early stopping validates on a sample of 2,000 users (a full ranking of a million items each);
the report's test and validation metrics and baselines are on 2,000 users of each split too.
Kept out of `make test`: it takes about half an hour on two cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from models import registry
from models.data import load, with_catalog
from models.pipeline import peak_rss_mb, provenance, register_network, training_report
from models.train import TrainConfig, build_dataset, fit, loss_kind


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?", default="/tmp/foresight-big-catalog")
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--registry", type=Path, help="export the trained network here")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    events = work / f"events-{args.events}-{args.items}.jsonl"
    catalog = work / f"catalog-{args.items}.jsonl"
    if not (events.exists() and catalog.exists()):
        began = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "generate", "--events", str(args.events),
             "--items", str(args.items), "--users", str(args.users), "--out", str(events),
             "--catalog-out", str(catalog)],
            check=True,
        )  # fmt: skip
        print(f"generated {args.events:,} events in {time.monotonic() - began:.0f}s", flush=True)
    began = time.monotonic()
    history = with_catalog(load(f"jsonl:{events}"), catalog)
    source = provenance(history)
    print(f"loaded in {time.monotonic() - began:.0f}s, peak RSS {peak_rss_mb()} MB", flush=True)
    began = time.monotonic()
    data = build_dataset(history)
    del history
    print(
        f"dataset: {len(data.users):,} users, {data.vocab.n_items:,} items in "
        f"{time.monotonic() - began:.0f}s, peak RSS {peak_rss_mb()} MB",
        flush=True,
    )
    cfg = TrainConfig(epochs=1, val_users=2_000)
    began = time.monotonic()
    result = fit(data, cfg)
    print(
        f"one epoch ({loss_kind(cfg, data.vocab.n_items)} softmax) in "
        f"{time.monotonic() - began:.0f}s, peak RSS {peak_rss_mb()} MB; validation sample "
        f"NDCG@10 {result.curves['val_ndcg@10'][0]:.4f}",
        flush=True,
    )
    report = training_report(data, result, cfg, source, users=2_000)
    print("test sample:", report["metrics"], f"peak RSS {peak_rss_mb()} MB", flush=True)
    if args.registry:
        began = time.monotonic()
        version = register_network(result.net, result.curves, data, cfg, report, args.registry)
        registry.mark_current(args.registry, version)
        print(json.dumps(report.get("candidate_path", {}), indent=1))
        print(
            f"{args.registry / version}: exported in {time.monotonic() - began:.0f}s, "
            f"peak RSS {peak_rss_mb()} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
