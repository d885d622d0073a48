"""Serve an already trained model through the item index, by hand (issue #13 item 3): re-export
a registered version's network with ``--serving candidates`` into another registry, with the
training report it had, and print what the export measured (recall@10 of the index against
exact top-k, the normaliser and surprise errors). Both artifacts then hold the same network,
so ``foresight bench`` can compare exact and candidate serving on it.

    .venv/bin/python -m tests.manual.candidate_path REGISTRY/VERSION DATA_SPEC OUT_REGISTRY
        [--serving exact] [--catalog FILE]

``--serving exact`` re-exports the other way round: a candidate-path model with exact top-k in
its graph, for the same comparison on a catalog that was trained above ``--exact-max-items``.

DATA_SPEC is the training data (as ``foresight train --data``, with ``--catalog`` where the
model was trained with one), needed for the popular head and the held-out users; its
vocabulary must be the model's.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from models import registry
from models.data import load, with_catalog
from models.pipeline import load_network, peak_rss_mb, register_network
from models.train import TrainConfig, build_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("data")
    parser.add_argument("out", type=Path)
    parser.add_argument("--serving", choices=["candidates", "exact"], default="candidates")
    parser.add_argument("--catalog", type=Path, help="the catalog the model was trained with")
    args = parser.parse_args()
    net, vocab, manifest = load_network(args.model)
    history = load(args.data)
    data = build_dataset(with_catalog(history, args.catalog) if args.catalog else history)
    if data.vocab.hashes() != vocab.hashes():
        raise SystemExit("the data's vocabulary is not the model's")
    report = json.loads((args.model / "report.json").read_text())
    report.pop("gate", None)
    report.pop("candidate_path", None)  # measured again by a candidate export, not by an exact one
    cfg = replace(TrainConfig(), max_len=manifest["max_sequence_length"], serving=args.serving)
    cfg = replace(cfg, network=replace(cfg.network, **manifest["network"]))
    began = time.monotonic()
    curves: dict = {"loss": [], "val_ndcg@10": [], "val_hr@10": []}  # not kept in a report
    version = register_network(net, curves, data, cfg, report, args.out)
    registry.mark_current(args.out, version)
    print(json.dumps(report.get("candidate_path", {}), indent=1))
    took = time.monotonic() - began
    print(f"{args.out / version}: exported in {took:.0f}s, peak RSS {peak_rss_mb()} MB")


if __name__ == "__main__":
    main()
