"""The item index alone at a million items, by hand (issue #13): a trained model's item vectors
resampled with noise stand in for a trained 1M-item table, its test users' hidden states are
the queries. Prints build time, and recall@10 against exact top-k with µs a query (one
thread, 100 candidates) for the IVF index the trainer builds and for a 4-bit PQ fast-scan IVF
with exact re-ranking.

    .venv/bin/python -m tests.manual.index_scaling REGISTRY/VERSION DATA_SPEC [--items 1000000]

Not a trained 1M-item model: it measures the index's cost and recall at that size only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
import torch

from models.contract import N_RESERVED_ITEMS
from models.data import load
from models.features import pad_batch
from models.index_export import smallest_probe
from models.item_index import IndexConfig, ItemIndex, build_index
from models.pipeline import load_network
from models.train import build_dataset


def _exact_top10(queries: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ table.T
        scores[:, :N_RESERVED_ITEMS] = -np.inf
        part = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        out.append(np.take_along_axis(part, order, 1))
    return np.concatenate(out)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("data")
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
    net, _, manifest = load_network(args.model)
    with torch.inference_mode():
        trained = net.item_table().numpy()[N_RESERVED_ITEMS:]
    cases = build_dataset(load(args.data)).cases("test")[:1000]
    session = ort.InferenceSession(
        str(args.model / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    inputs = pad_batch(
        [c.input_items for c in cases],
        [c.input_types for c in cases],
        [c.input_ts for c in cases],
        length=manifest["max_sequence_length"],
    )
    names = [o.name for o in session.get_outputs()]
    queries = dict(zip(names, session.run(names, inputs), strict=True))["user_vector"]
    rng = np.random.default_rng(0)
    picked = trained[rng.integers(0, len(trained), args.items)]
    noise = rng.normal(0, 0.3 * trained.std(), picked.shape)
    table = np.vstack([np.zeros((N_RESERVED_ITEMS, trained.shape[1])), picked + noise])
    table = table.astype(np.float32)
    exact = _exact_top10(queries, table)
    began = time.time()
    index = ItemIndex(build_index(table, IndexConfig(), threads=2), np.arange(2048), IndexConfig())
    print(f"IVFFlat, {index.index.nlist} lists: built in {time.time() - began:.0f}s", flush=True)
    faiss.omp_set_num_threads(1)
    for target in (0.95, 0.97):
        recall = smallest_probe(index, queries, exact, target)
        began = time.perf_counter()
        index.search(queries, 100)
        took = (time.perf_counter() - began) / len(queries) * 1e6
        print(f"  probe {index.probe}: recall@10 {recall:.4f}, {took:.0f} µs a query", flush=True)
    faiss.omp_set_num_threads(2)
    began = time.time()
    lists = index.index.nlist
    fast = faiss.index_factory(
        table.shape[1], f"IVF{lists},PQ32x4fs,RFlat", faiss.METRIC_INNER_PRODUCT
    )
    vectors = np.ascontiguousarray(table[N_RESERVED_ITEMS:])
    fast.train(vectors)
    fast.add(vectors)
    print(f"IVF{lists},PQ32x4fs,RFlat: built in {time.time() - began:.0f}s", flush=True)
    faiss.omp_set_num_threads(1)
    for probe, k_factor in ((64, 10.0), (128, 10.0)):
        faiss.extract_index_ivf(fast).nprobe = probe
        fast.k_factor = k_factor
        began = time.perf_counter()
        _, rows = fast.search(queries, 100)
        took = (time.perf_counter() - began) / len(queries) * 1e6
        recall = _recall(rows + N_RESERVED_ITEMS, exact)
        print(f"  probe {probe}, re-rank x{k_factor:.0f}: recall@10 {recall:.4f}, {took:.0f} µs")


if __name__ == "__main__":
    main()
