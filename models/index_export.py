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
import torch

from models.contract import CANDIDATE_OUTPUTS, N_RESERVED_ITEMS, NO_ITEM, sha256_of
from models.evaluate import popularity
from models.features import pad_batch
from models.item_index import (
    INDEX_FILE,
    IndexConfig,
    ItemIndex,
    build_index,
    candidate_outputs,
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
    """Build, save and measure ``items.faiss``; returns (manifest entry, report entry)."""
    began = time.monotonic()
    with torch.inference_mode():
        table = net.item_table().numpy()
    train_items = [[i for i in u.items if i > NO_ITEM] for u in data.train_part()]
    counts = popularity(train_items, data.vocab.n_items)[N_RESERVED_ITEMS:]
    head = np.argsort(-counts, kind="stable")[: config.head]
    index = build_index(table, config, threads=torch.get_num_threads())
    save_index(index, stage / INDEX_FILE)
    build_seconds = time.monotonic() - began
    log.info("item index: %d items in %.0f s", index.ntotal, build_seconds)
    entry = {
        "file": INDEX_FILE,
        "sha256": sha256_of(stage / INDEX_FILE),
        "kind": "faiss IndexHNSWFlat, inner product",
        "config": config.to_dict(),
        "head": head.tolist(),
    }
    item_index = ItemIndex(read_index(stage / INDEX_FILE), head, config)
    report = measure(
        stage / "model.onnx", item_index, table, data, quantiles, net.config.top_k, max_len
    )
    report["build_seconds"] = round(build_seconds, 1)
    report["config"] = config.to_dict()
    return entry, report


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
    graph: Path,
    item_index: ItemIndex,
    table: np.ndarray,
    data,
    quantiles: np.ndarray,
    k: int,
    max_len: int,
    users: int = 2000,
) -> dict:
    """Candidate path against exact on up to ``users`` held-out test sequences."""
    import onnxruntime as ort

    cases = data.cases("test")[:users]
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = list(CANDIDATE_OUTPUTS)
    hits, lse_errors, prev_errors, surprise_errors, seconds = [], [], [], [], 0.0
    for start in range(0, len(cases), 256):
        chunk = cases[start : start + 256]
        inputs = pad_batch(
            [c.input_items for c in chunk],
            [c.input_types for c in chunk],
            [c.input_ts for c in chunk],
            length=max_len,
        )
        out = dict(zip(names, session.run(names, inputs), strict=True))
        began = time.perf_counter()
        got = candidate_outputs(item_index, out, inputs, quantiles, k)
        seconds += time.perf_counter() - began
        exact_items, exact_lse = _exact(out["user_vector"], table, k)
        _, exact_prev = _exact(out["prev_vector"], table, 1)
        hits += [
            len(set(a[:10].tolist()) & set(b[:10].tolist())) / min(10, k)
            for a, b in zip(got["top_items"], exact_items, strict=True)
        ]
        lse_errors.append(np.abs(got["log_normaliser"] - exact_lse))
        observed = inputs["item_ids"][:, -1]
        has_item = observed >= N_RESERVED_ITEMS
        logit = out["observed_logit"].astype(np.float64)
        prev = out["prev_vector"]
        approx_prev = item_index.log_normaliser(prev, observed[:, None], logit[:, None])
        prev_errors.append(np.abs(approx_prev - exact_prev)[has_item])
        raw = out["type_nll"] + np.where(has_item, exact_prev - logit, 0.0)
        exact_surprise = (raw[:, None] > quantiles[None, :]).mean(axis=1)
        exact_surprise *= inputs["event_types"][:, -2] != 0
        surprise_errors.append(np.abs(got["surprise"] - exact_surprise))

    def summary(errors: list[np.ndarray]) -> dict:
        values = np.concatenate(errors) if errors else np.zeros(1)
        return {
            "mean": round(float(values.mean()), 5),
            "p99": round(float(np.quantile(values, 0.99)), 5),
            "max": round(float(values.max()), 5),
        }

    return {
        "users": len(cases),
        "recall@10": round(float(np.mean(hits)), 4) if hits else None,
        "log_normaliser_abs_error": summary(lse_errors),
        "surprise_log_normaliser_abs_error": summary(prev_errors),
        "surprise_abs_error": summary(surprise_errors),
        "us_per_sequence": round(seconds / max(len(cases), 1) * 1e6, 1),
    }
