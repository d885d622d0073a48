"""The trainer's side of the candidate path: build the item index beside the exported graph and
measure it against exact serving on held-out users (recall@10, normaliser and surprise error).

The measurement runs the artifact's own files (the ONNX graph and the saved index) through the
worker's code (models/item_index.py), and compares with the exact values computed from the
same item table in numpy, in chunks of items, so it holds on catalogs too big for exact serving.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from models.contract import CANDIDATE_OUTPUTS, N_RESERVED_ITEMS, NO_ITEM, sha256_of
from models.evaluate import popularity
from models.features import pad_batch
from models.item_index import (
    INDEX_FILE,
    IndexConfig,
    ItemIndex,
    build_index,
    calibrated_surprise,
    estimate,
    read_index,
    save_index,
)
from models.network import SequenceTransformer

log = logging.getLogger(__name__)
ITEMS_PER_CHUNK = 65_536  # item columns alive at once in the exact reference


def add_item_index(
    stage: Path,
    net: SequenceTransformer,
    data,
    config: IndexConfig,
    quantiles: np.ndarray,
    max_len: int,
) -> tuple[dict, dict]:
    """Build, save, tune and measure ``items.faiss``; returns (manifest entry, report entry)."""
    began = time.monotonic()
    with torch.inference_mode():
        table = net.item_table().numpy()
    train_items = [[i for i in u.items if i > NO_ITEM] for u in data.train_part()]
    counts = popularity(train_items, data.vocab.n_items)[N_RESERVED_ITEMS:]
    head = np.argsort(-counts, kind="stable")[: config.head]
    index = build_index(table, config, threads=torch.get_num_threads())
    save_index(index, stage / INDEX_FILE)
    build_seconds = time.monotonic() - began
    log.info("item index: %d items in %d lists, %.0f s", index.ntotal, index.nlist, build_seconds)
    session = ort.InferenceSession(str(stage / "model.onnx"), providers=["CPUExecutionProvider"])
    item_index = ItemIndex(read_index(stage / INDEX_FILE), head, config)
    if not config.probe:
        tune_probe(item_index, session, table, data.cases("val"), config.target_recall, max_len)
    report = measure(session, item_index, table, data.cases("test"), quantiles, net, max_len)
    report.update(
        build_seconds=round(build_seconds, 1), lists=index.nlist, config=item_index.config.to_dict()
    )
    entry = {
        "file": INDEX_FILE,
        "sha256": sha256_of(stage / INDEX_FILE),
        "kind": "faiss IndexIVFFlat, inner product",
        "config": item_index.config.to_dict(),
        "head": head.tolist(),
    }
    return entry, report


def _graph_outputs(session, cases: list, max_len: int, users: int):
    """(inputs, candidate-graph outputs) for up to ``users`` cases, 256 at a time."""
    names = list(CANDIDATE_OUTPUTS)
    for start in range(0, min(len(cases), users), 256):
        chunk = cases[start : min(start + 256, users)]
        inputs = pad_batch(
            [c.input_items for c in chunk],
            [c.input_types for c in chunk],
            [c.input_ts for c in chunk],
            length=max_len,
        )
        yield inputs, dict(zip(names, session.run(names, inputs), strict=True))


def _recall_at_10(found: np.ndarray, exact: np.ndarray) -> list[float]:
    return [
        len(set(a[:10].tolist()) & set(b[:10].tolist())) / min(10, exact.shape[1])
        for a, b in zip(found, exact, strict=True)
    ]


def tune_probe(
    item_index: ItemIndex,
    session,
    table: np.ndarray,
    cases: list,
    target: float,
    max_len: int,
    users: int = 1000,
) -> None:
    """Set the fewest lists to probe whose recall@10 on validation users reaches ``target``."""
    outputs = _graph_outputs(session, cases, max_len, users)
    queries = np.concatenate([out["user_vector"] for _, out in outputs])
    smallest_probe(item_index, queries, _exact(queries, table, 10)[0], target)


def smallest_probe(
    item_index: ItemIndex, queries: np.ndarray, exact: np.ndarray, target: float
) -> float:
    """Probe 1, 2, 4, ... lists until recall@10 against ``exact`` reaches ``target`` (or every
    list is probed); leaves the index at that setting and returns its recall."""
    probe = 1
    while True:
        item_index.set_probe(probe)
        recall = float(np.mean(_recall_at_10(item_index.search(queries, 10)[0], exact)))
        log.info("item index: %d lists probed, validation recall@10 %.4f", probe, recall)
        if recall >= target or probe >= item_index.index.nlist:
            return recall
        probe *= 2


def _exact(queries: np.ndarray, table: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k item indices and log-normalisers over the real items, chunked by items."""
    q = queries.astype(np.float64)
    best_items = np.zeros((len(q), 0), dtype=np.int64)
    best_logits = np.zeros((len(q), 0))
    lse = np.full(len(q), -np.inf)
    for start in range(N_RESERVED_ITEMS, len(table), ITEMS_PER_CHUNK):
        block = q @ table[start : start + ITEMS_PER_CHUNK].T.astype(np.float64)
        peak = block.max(axis=1)
        lse = np.logaddexp(lse, peak + np.log(np.exp(block - peak[:, None]).sum(axis=1)))
        columns = np.broadcast_to(np.arange(start, start + block.shape[1]), block.shape)
        items = np.concatenate([best_items, columns], axis=1)
        logits = np.concatenate([best_logits, block], axis=1)
        keep = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        best_items = np.take_along_axis(items, keep, axis=1)
        best_logits = np.take_along_axis(logits, keep, axis=1)
    return best_items, lse


def measure(
    session,
    item_index: ItemIndex,
    table: np.ndarray,
    cases: list,
    quantiles: np.ndarray,
    net: SequenceTransformer,
    max_len: int,
    users: int = 2000,
) -> dict:
    """The candidate path against exact on up to ``users`` held-out test sequences."""
    k = net.config.top_k
    hits, lse_errors, prev_errors, surprise_errors, seconds, n = [], [], [], [], 0.0, 0
    for inputs, out in _graph_outputs(session, cases, max_len, users):
        began = time.perf_counter()
        found, _, lse, prev_lse = estimate(item_index, out, inputs, max(k, 10))
        surprise = calibrated_surprise(out, inputs, prev_lse, quantiles)
        seconds += time.perf_counter() - began
        n += len(inputs["item_ids"])
        exact_items, exact_lse = _exact(out["user_vector"], table, max(k, 10))
        _, exact_prev = _exact(out["prev_vector"], table, 1)
        hits += _recall_at_10(found, exact_items)
        lse_errors.append(np.abs(lse - exact_lse))
        has_item = inputs["item_ids"][:, -1] >= N_RESERVED_ITEMS
        prev_errors.append(np.abs(prev_lse - exact_prev)[has_item])
        exact_surprise = calibrated_surprise(out, inputs, exact_prev, quantiles)
        surprise_errors.append(np.abs(surprise - exact_surprise))

    def summary(errors: list[np.ndarray]) -> dict:
        values = np.concatenate(errors) if errors else np.zeros(1)
        return {
            "mean": round(float(values.mean()), 5),
            "p99": round(float(np.quantile(values, 0.99)), 5),
            "max": round(float(values.max()), 5),
        }

    return {
        "users": n,
        "recall@10": round(float(np.mean(hits)), 4) if hits else None,
        "log_normaliser_abs_error": summary(lse_errors),
        "surprise_log_normaliser_abs_error": summary(prev_errors),
        "surprise_abs_error": summary(surprise_errors),
        "us_per_sequence": round(seconds / max(n, 1) * 1e6, 1),
    }
