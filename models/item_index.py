"""The candidate path for big catalogs: an HNSW index over the item table, and the normaliser
its probabilities need, estimated instead of summed over every item.

Exact top-k multiplies every scored hidden state by the whole item table, so its cost grows
with the catalog. Above a configured size the trainer exports a graph without that product
(models/export.py) and builds this index beside it; the worker asks the index for each
user's ``top_k`` items by inner product. The index stores the vectors themselves (faiss
``IndexHNSWFlat``), so the candidates' logits are exact; only which items become candidates
is approximate, and the trainer reports its recall@10 against exact top-k.

Probabilities need ``log Σ exp(logit)`` over every item. It is estimated as the exact sum over
the most popular items (where, in shop data, most of the mass sits), the query's own
candidates and, for surprise, the observed item, plus the rest of the catalog estimated from a
fixed uniform sample of it scaled by its size. The cost per query is constant in the catalog.
The trainer reports the estimate's error against the exact normaliser.

Torch-free: the worker imports it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from models.contract import N_RESERVED_ITEMS

INDEX_FILE = "items.faiss"


@dataclass(frozen=True)
class IndexConfig:
    """How the index is built and searched; saved in the manifest.

    Args:
        links (int, 32): HNSW links per node (faiss ``M``): recall and memory grow with it.
        ef_construction (int, 80): candidate list while building.
        ef_search (int, 128): candidate list while searching: recall against time per query.
        head (int, 4096): most popular items whose logits the normaliser sums exactly.
        sample (int, 2048): uniformly drawn other items that estimate the rest of the sum.
        seed (int, 0): the sample's seed.
    """

    links: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    head: int = 4096
    sample: int = 2048
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_index(table: np.ndarray, config: IndexConfig, threads: int | None = None):
    """An inner-product HNSW index over the real items (row ``i`` is item ``i + N_RESERVED``)."""
    if threads:
        faiss.omp_set_num_threads(threads)
    vectors = np.ascontiguousarray(table[N_RESERVED_ITEMS:], dtype=np.float32)
    index = faiss.IndexHNSWFlat(vectors.shape[1], config.links, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.ef_construction
    index.add(vectors)
    return index


def save_index(index, path: Path) -> None:
    faiss.write_index(index, str(path))  # faiss's own binary layout, no Python objects


def read_index(path: Path):
    return faiss.read_index(str(path))


def _logsumexp(values: np.ndarray, axis: int = -1) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.squeeze(peak, axis) + np.log(np.sum(np.exp(values - peak), axis=axis))


class ItemIndex:
    """Searches the index and estimates normalisers (see the module docstring).

    ``head`` are item rows (0-based over the real items) by falling popularity in training.
    """

    def __init__(self, index, head: np.ndarray, config: IndexConfig) -> None:
        self.index = index
        self.config = config
        index.hnsw.efSearch = config.ef_search
        n = index.ntotal
        self.size = n
        self.head = np.asarray(head[: config.head], dtype=np.int64)
        in_head = np.zeros(n, dtype=bool)
        in_head[self.head] = True
        rest = np.flatnonzero(~in_head)
        rng = np.random.default_rng(config.seed)
        self.sample = np.sort(rng.choice(rest, size=min(config.sample, len(rest)), replace=False))
        self.rest_size = len(rest)
        self.in_head = in_head
        self.head_vectors = index.reconstruct_batch(self.head) if len(self.head) else None
        self.sample_vectors = index.reconstruct_batch(self.sample) if len(self.sample) else None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices [B, k] into the vocabulary, their exact logits [B, k]), best first."""
        logits, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return rows.astype(np.int64) + N_RESERVED_ITEMS, logits

    def log_normaliser(
        self, queries: np.ndarray, known: np.ndarray, known_logits: np.ndarray
    ) -> np.ndarray:
        """Estimated ``log Σ_items exp(query · item)`` [B] (float64).

        ``known`` [B, m] are vocabulary indices whose exact logits ``known_logits`` the caller
        already has (its candidates, the observed item); entries below ``N_RESERVED_ITEMS``
        are ignored. They count exactly, once, even when they are also in the head or sample.
        """
        q = np.asarray(queries, dtype=np.float64)
        rows = known - N_RESERVED_ITEMS
        valid = rows >= 0
        rows = np.where(valid, rows, 0)
        # each distinct known item once, and not again through the head
        duplicate = np.zeros_like(valid)
        for j in range(1, rows.shape[1]):
            duplicate[:, j] = ((rows[:, :j] == rows[:, j : j + 1]) & valid[:, :j]).any(axis=1)
        own = valid & ~duplicate & ~self.in_head[rows]
        parts = [np.where(own, known_logits.astype(np.float64), -np.inf)]
        if self.head_vectors is not None:
            parts.append(q @ self.head_vectors.T.astype(np.float64))
        if self.sample_vectors is not None:
            sample_logits = q @ self.sample_vectors.T.astype(np.float64)
            known_rest = own.sum(axis=1)  # exact items taken out of the rest of the catalog
            in_sample = (self.sample[None, :, None] == np.where(own, rows, -1)[:, None, :]).any(-1)
            drawn = np.maximum((~in_sample).sum(axis=1), 1)
            scale = np.log(np.maximum(self.rest_size - known_rest, 0)) - np.log(drawn)
            masked = np.where(in_sample, -np.inf, sample_logits)
            parts.append((_logsumexp(masked) + scale)[:, None])
        return _logsumexp(np.concatenate(parts, axis=1))


def candidate_outputs(
    index: ItemIndex,
    graph: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
    quantiles: np.ndarray,
    k: int,
) -> dict[str, np.ndarray]:
    """The exact graph's outputs (models/contract.py ``OUTPUTS``) from the candidate graph's
    (``CANDIDATE_OUTPUTS``): top-k from the index, probabilities and surprise through the
    estimated normalisers, surprise calibrated with the artifact's quantiles as in the graph."""
    last, prev = graph["user_vector"], graph["prev_vector"]
    top_items, top_logits = index.search(last, k)
    log_normaliser = index.log_normaliser(last, top_items, top_logits)
    observed = inputs["item_ids"][:, -1]
    observed_logit = graph["observed_logit"].astype(np.float64)
    prev_normaliser = index.log_normaliser(prev, observed[:, None], observed_logit[:, None])
    item_nll = np.where(observed >= N_RESERVED_ITEMS, prev_normaliser - observed_logit, 0.0)
    raw = graph["type_nll"] + item_nll
    calibrated = (raw[:, None] > quantiles[None, :]).mean(axis=1)
    has_prefix = inputs["event_types"][:, -2] != 0
    return {
        "next_action": graph["next_action"],
        "top_items": top_items,
        "top_scores": np.exp(top_logits - log_normaliser[:, None]).astype(np.float32),
        "risk": graph["risk"],
        "surprise": (calibrated * has_prefix).astype(np.float32),
        "user_vector": last,
        "log_normaliser": log_normaliser.astype(np.float32),
    }
