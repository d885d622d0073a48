"""The candidate path for big catalogs: an inverted-file index over the item table, and the
normaliser its probabilities need, estimated instead of summed over every item.

Exact top-k multiplies every scored hidden state by the whole item table, so its cost grows
with the catalog. Above a configured size the trainer exports a graph without that product
(models/export.py) and builds this index beside it; the worker asks the index for each
user's best items by inner product. The index (faiss ``IndexIVFFlat``) clusters the items into
about 4·√n lists and scans only the ``probe`` lists whose centroids score best, so a query
costs about √n, not n. It stores the vectors themselves, so the candidates' logits are exact;
only which items become candidates is approximate. The trainer picks ``probe`` as the
smallest that reaches the target recall@10 against exact top-k on validation users, and
reports the recall on test users.

(An HNSW graph was tried first: on Amazon Video's item table, where many items share a zero or
tiny vector, it reached recall@10 0.82 at 61 µs a query against 0.95 at 35 µs for this index.)

Probabilities need ``log Σ exp(logit)`` over every item. It is estimated as the exact sum over
the items most popular in training (where, in shop data, much of the mass sits), the query's
own candidates and, for surprise, the observed item, plus the rest of the catalog estimated
from a fixed uniform sample of it scaled to its size. The cost per query does not grow with
the catalog. The trainer reports the estimate's error against the exact normaliser.

Torch-free: the worker imports it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from models.contract import N_RESERVED_ITEMS

INDEX_FILE = "items.faiss"


@dataclass(frozen=True)
class IndexConfig:
    """How the index is built and searched; saved in the manifest.

    Args:
        lists (int, 0): inverted lists (k-means clusters); 0: about 4·√items, at least 39
            items a list.
        probe (int, 0): lists scanned per query; 0: the trainer picks the smallest reaching
            ``target_recall`` on validation users.
        target_recall (float, 0.97): recall@10 against exact top-k that ``probe`` must reach.
        candidates (int, 100): items fetched per query: the first ``top_k`` are served, all
            count exactly in the normaliser.
        head (int, 2048): most popular items whose logits the normaliser sums exactly.
        sample (int, 2048): uniformly drawn other items that estimate the rest of the sum.
        seed (int, 0): the sample's seed.
    """

    lists: int = 0
    probe: int = 0
    target_recall: float = 0.97
    candidates: int = 100
    head: int = 2048
    sample: int = 2048
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def list_count(n_items: int, config: IndexConfig) -> int:
    """The number of inverted lists for ``n_items``: configured, or about 4·√n."""
    return config.lists or max(1, min(round(4 * math.sqrt(n_items)), n_items // 39))


def build_index(table: np.ndarray, config: IndexConfig, threads: int | None = None):
    """An inner-product IVF index over the real items (row ``i`` is item ``i + N_RESERVED``)."""
    if threads:
        faiss.omp_set_num_threads(threads)
    vectors = np.ascontiguousarray(table[N_RESERVED_ITEMS:], dtype=np.float32)
    lists = list_count(len(vectors), config)
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = config.seed
    index.cp.max_points_per_centroid = 64  # k-means on at most 64 items a list: ~1 min at 1M
    index.train(vectors)
    index.add(vectors)
    return index


def save_index(index, path: Path) -> None:
    faiss.write_index(index, str(path))  # faiss's own binary layout, no Python objects


def read_index(path: Path):
    return faiss.read_index(str(path))


def _sum_exp(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise (peak, Σ exp(logit - peak)), float64 sums of float32 exponentials."""
    peak = logits.max(axis=1)
    peak = np.where(np.isfinite(peak), peak, 0.0).astype(np.float32)
    return peak.astype(np.float64), np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64)


class ItemIndex:
    """Searches the index and estimates normalisers (see the module docstring).

    ``head`` are item rows (0-based over the real items) by falling popularity in training.
    """

    def __init__(self, index, head: np.ndarray, config: IndexConfig) -> None:
        self.index = index
        self.config = config
        n = index.ntotal
        self.size = n
        self.set_probe(config.probe or 1)
        self.head = np.asarray(head[: config.head], dtype=np.int64)
        in_head = np.zeros(n, dtype=bool)
        in_head[self.head] = True
        rest = np.flatnonzero(~in_head)
        rng = np.random.default_rng(config.seed)
        self.sample = np.sort(rng.choice(rest, size=min(config.sample, len(rest)), replace=False))
        self.sample_position = np.full(n, -1, dtype=np.int64)
        self.sample_position[self.sample] = np.arange(len(self.sample))
        self.rest_size = len(rest)
        self.in_head = in_head
        index.make_direct_map()  # row → vector, for the head and the sample
        self.head_t = np.ascontiguousarray(self._vectors(self.head).T)
        self.sample_t = np.ascontiguousarray(self._vectors(self.sample).T)

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.zeros((0, self.index.d), dtype=np.float32)
        return self.index.reconstruct_batch(rows).astype(np.float32)

    def set_probe(self, probe: int) -> None:
        """Lists scanned per query: at least enough to hold twice the candidates on average."""
        lists = self.index.nlist
        enough = math.ceil(2 * self.config.candidates * lists / max(self.size, 1))
        self.probe = max(1, min(max(probe, enough), lists))
        self.index.nprobe = self.probe
        self.config = replace(self.config, probe=self.probe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices [B, k] into the vocabulary, their exact logits [B, k]), best first.

        A query whose probed lists hold fewer than ``k`` items is searched again over every
        list (rare: the probe covers twice the candidates on average), so no row is short
        unless the catalog is; there the missing places have index ``N_RESERVED_ITEMS - 1``
        (never an item) and logit -inf."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        logits, rows = self.index.search(q, k)
        short = np.flatnonzero((rows[:, : min(k, self.size)] < 0).any(axis=1))
        if len(short):
            everywhere = faiss.SearchParametersIVF()
            everywhere.nprobe = self.index.nlist
            logits[short], rows[short] = self.index.search(q[short], k, params=everywhere)
        logits[rows < 0] = -np.inf
        return rows.astype(np.int64) + N_RESERVED_ITEMS, logits

    def log_normaliser(
        self, queries: np.ndarray, known: np.ndarray, known_logits: np.ndarray
    ) -> np.ndarray:
        """Estimated ``log Σ_items exp(query · item)`` [B] (float64).

        ``known`` [B, m] are vocabulary indices whose exact logits ``known_logits`` the caller
        already has (its candidates, the observed item); entries below ``N_RESERVED_ITEMS``
        are ignored. They count exactly, once, even when they are also in the head or sample.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        rows = np.where(known >= N_RESERVED_ITEMS, known - N_RESERVED_ITEMS, -1)
        order = np.argsort(rows, axis=1, kind="stable")  # equal items side by side
        rows = np.take_along_axis(rows, order, axis=1)
        logits = np.take_along_axis(np.asarray(known_logits, dtype=np.float32), order, axis=1)
        valid = rows >= 0
        first = np.ones_like(valid)
        first[:, 1:] = rows[:, 1:] != rows[:, :-1]
        own = valid & first & ~self.in_head[np.maximum(rows, 0)]
        parts = [_sum_exp(np.where(own, logits, -np.inf))] if rows.shape[1] else []
        if len(self.head):
            parts.append(_sum_exp(q @ self.head_t))
        if len(self.sample):
            sample_logits = q @ self.sample_t
            position = self.sample_position[np.maximum(rows, 0)]
            drawn_known = own & (position >= 0)  # counted exactly: out of the sample
            r, c = np.nonzero(drawn_known)
            sample_logits[r, position[r, c]] = -np.inf
            peak, total = _sum_exp(sample_logits)
            drawn = np.maximum(len(self.sample) - drawn_known.sum(axis=1), 1)
            rest = np.maximum(self.rest_size - own.sum(axis=1), 0)
            parts.append((peak, total * rest / drawn))
        peak = np.max(np.stack([p for p, _ in parts]), axis=0)
        total = sum(t * np.exp(p - peak) for p, t in parts)
        with np.errstate(divide="ignore"):
            return peak + np.log(total)


def estimate(
    index: ItemIndex, graph: dict[str, np.ndarray], inputs: dict[str, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top-k items, their logits, the prediction's log-normaliser, the surprise's) for the
    candidate graph's outputs. One search serves both hidden states: the latest one's
    candidates rank and normalise the prediction, the previous one's (with the observed item)
    normalise the surprise of the latest event."""
    last, prev = graph["user_vector"], graph["prev_vector"]
    rows = len(last)
    found, logits = index.search(np.concatenate([last, prev]), max(k, index.config.candidates))
    observed = inputs["item_ids"][:, -1:]
    return (
        found[:rows, :k],
        logits[:rows, :k],
        index.log_normaliser(last, found[:rows], logits[:rows]),
        index.log_normaliser(
            prev,
            np.concatenate([observed, found[rows:]], axis=1),
            np.concatenate([graph["observed_logit"][:, None], logits[rows:]], axis=1),
        ),
    )


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
    top_items, top_logits, log_normaliser, prev_normaliser = estimate(index, graph, inputs, k)
    return {
        "next_action": graph["next_action"],
        "top_items": top_items,
        "top_scores": np.exp(top_logits - log_normaliser[:, None]).astype(np.float32),
        "risk": graph["risk"],
        "surprise": calibrated_surprise(graph, inputs, prev_normaliser, quantiles),
        "user_vector": graph["user_vector"],
        "log_normaliser": log_normaliser.astype(np.float32),
    }


def calibrated_surprise(
    graph: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
    prev_normaliser: np.ndarray,
    quantiles: np.ndarray,
) -> np.ndarray:
    """The share of calibration quantiles the latest event's surprise exceeds, as the exact
    graph computes it (0 for a sequence of one event)."""
    observed = inputs["item_ids"][:, -1]
    observed_logit = graph["observed_logit"].astype(np.float64)
    item_nll = np.where(observed >= N_RESERVED_ITEMS, prev_normaliser - observed_logit, 0.0)
    raw = graph["type_nll"] + item_nll
    calibrated = (raw[:, None] > quantiles[None, :]).mean(axis=1)
    has_prefix = inputs["event_types"][:, -2] != 0
    return (calibrated * has_prefix).astype(np.float32)
