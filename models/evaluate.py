"""Full-ranking evaluation and the two baselines of EVAL_PROTOCOL.md (numpy only).

Reserved slots and the items of each user's input sequence are excluded, ties rank the smaller
id first (never optimistic), and the target's 0-based rank gives HR@K and NDCG@10. Scores are
produced block by block (a chunk of users by a chunk of items) and only a running count of the
items ahead of each target is kept, so memory does not grow with users times catalog.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

from models.contract import SPECIAL_ITEMS


@dataclass(frozen=True)
class EvalCase:
    """One user's evaluation: what the model sees and the item it must rank."""

    user: str
    input_items: list[int]
    input_types: list[int]
    input_ts: list[float]
    target: int


# (case rows, item columns) → a new scores array [rows, columns], which the ranking overwrites
# where an item is excluded; the same call must give the same numbers
BlockScorer = Callable[[slice, slice], np.ndarray]
USERS_PER_CHUNK = 1024
ITEMS_PER_CHUNK = 16_384
KEPT_BLOCK_BYTES = 256 << 20


def streamed_ranks(
    score_block: BlockScorer,
    cases: list[EvalCase],
    n_items: int,
    users_per_chunk: int = USERS_PER_CHUNK,
    items_per_chunk: int = ITEMS_PER_CHUNK,
) -> np.ndarray:
    """0-based rank of each target, as :func:`target_ranks` gives on the dense matrix.

    Per chunk of users: the target's own score is read from the block that holds it (so it is
    computed exactly as its rivals are), then every block counts the items ahead of it.
    """
    ranks = np.zeros(len(cases), dtype=np.int64)
    for lo in range(0, len(cases), users_per_chunk):
        rows = slice(lo, min(lo + users_per_chunk, len(cases)))
        chunk = cases[rows]
        target = np.array([c.target for c in chunk])
        excluded_rows, excluded_items = _excluded(chunk)
        kept: dict[int, np.ndarray] = {}  # blocks of the first pass reused by the second
        score = np.empty(len(chunk))
        for start in np.unique(target // items_per_chunk * items_per_chunk):
            block = score_block(rows, slice(start, min(start + items_per_chunk, n_items)))
            here = np.flatnonzero((target >= start) & (target < start + items_per_chunk))
            score[here] = block[here, target[here] - start]
            if sum(b.nbytes for b in kept.values()) + block.nbytes <= KEPT_BLOCK_BYTES:
                kept[int(start)] = block
        for start in range(0, n_items, items_per_chunk):
            stop = min(start + items_per_chunk, n_items)
            block = kept.pop(start) if start in kept else score_block(rows, slice(start, stop))
            inside = (excluded_items >= start) & (excluded_items < stop)
            block[excluded_rows[inside], excluded_items[inside] - start] = -np.inf
            ranks[rows] += _count_ahead(block, score, target, start)
    return ranks


def _count_ahead(block, score: np.ndarray, target: np.ndarray, start: int) -> np.ndarray:
    """Per row: items of the block scored above the target, or equal with a smaller id."""
    b = torch.as_tensor(block)
    s = torch.as_tensor(score).to(b.dtype).unsqueeze(1)  # exact: read from a block of this type
    ids = torch.arange(start, start + b.shape[1])
    ties = (b == s) & (ids.unsqueeze(0) < torch.as_tensor(target).unsqueeze(1))
    return ((b > s).sum(1) + ties.sum(1)).numpy()


def _excluded(chunk: list[EvalCase]) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs not to rank: reserved slots, and each case's input items other than
    its target."""
    rows, items = [], []
    reserved = set(range(len(SPECIAL_ITEMS)))
    for row, case in enumerate(chunk):
        seen = sorted((set(case.input_items) | reserved) - {case.target})
        rows += [row] * len(seen)
        items += seen
    return np.array(rows, dtype=np.int64), np.array(items, dtype=np.int64)


def target_ranks(scores: np.ndarray, cases: list[EvalCase]) -> np.ndarray:
    """0-based rank of each target in a dense [cases, items] matrix (reserved + seen items
    excluded): the reference that :func:`streamed_ranks` is tested against."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[:, : len(SPECIAL_ITEMS)] = -np.inf
    ranks = np.empty(len(cases), dtype=np.int64)
    index = np.arange(scores.shape[1])
    for row, case in enumerate(cases):
        s = scores[row]
        seen = [i for i in set(case.input_items) if i != case.target]
        s[seen] = -np.inf
        t = s[case.target]
        ranks[row] = np.count_nonzero(s > t) + np.count_nonzero((s == t) & (index < case.target))
    return ranks


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """HR@1/10/20 and NDCG@10 averaged over users."""
    if len(ranks) == 0:
        return {"users": 0, "hr@1": 0.0, "hr@10": 0.0, "hr@20": 0.0, "ndcg@10": 0.0}
    ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {
        "users": len(ranks),
        "hr@1": float(np.mean(ranks < 1)),
        "hr@10": float(np.mean(ranks < 10)),
        "hr@20": float(np.mean(ranks < 20)),
        "ndcg@10": float(np.mean(ndcg)),
    }


def popularity(train_items: list[list[int]], n_items: int) -> np.ndarray:
    """How often each item occurs in the training data."""
    counts = np.zeros(n_items, dtype=np.float64)
    for seq in train_items:
        np.add.at(counts, seq, 1.0)
    return counts


def most_popular(train_items: list[list[int]], cases: list[EvalCase], n_items: int) -> dict:
    pop = popularity(train_items, n_items)
    return metrics_from_ranks(
        streamed_ranks(
            lambda rows, items: np.tile(pop[items], (len(cases[rows]), 1)), cases, n_items
        )
    )


def markov(train_items: list[list[int]], cases: list[EvalCase], n_items: int) -> dict:
    """count(last → j) in training data + popularity(j) / (max popularity + 1)."""
    pop = popularity(train_items, n_items)
    counts: dict[int, Counter] = defaultdict(Counter)
    for seq in train_items:
        for a, b in pairwise(seq):
            counts[a][b] += 1
    transitions = {
        a: (np.array(list(c.keys())), np.array(list(c.values()), dtype=np.float64))
        for a, c in counts.items()
    }
    tie_break = pop / (pop.max() + 1.0)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0))

    def block(rows: slice, items: slice) -> np.ndarray:
        chunk = cases[rows]
        out = np.tile(tie_break[items], (len(chunk), 1))
        for row, case in enumerate(chunk):
            nxt, n = transitions.get(case.input_items[-1], empty)
            inside = (nxt >= items.start) & (nxt < items.stop)
            out[row, nxt[inside] - items.start] += n[inside]
        return out

    return metrics_from_ranks(streamed_ranks(block, cases, n_items))


def text_only(text: np.ndarray, of_item: np.ndarray, cases: list[EvalCase]) -> dict:
    """Cosine similarity between the last input item's text embedding and every candidate
    (item ``i``'s embedding is ``text[of_item[i]]``)."""
    norm = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)

    def block(rows: slice, items: slice) -> np.ndarray:
        last = np.array([c.input_items[-1] for c in cases[rows]])
        return norm[of_item[last]] @ norm[of_item[items]].T

    return metrics_from_ranks(streamed_ranks(block, cases, len(of_item)))
