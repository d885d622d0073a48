"""Full-ranking evaluation and the two baselines of EVAL_PROTOCOL.md (numpy only).

Scores come in as a [users, items] matrix over the whole item table; reserved slots and the
items of each user's input sequence are excluded, ties rank the smaller id first (never
optimistic), and the target's 0-based rank gives HR@K and NDCG@10.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from models.contract import SPECIAL_ITEMS


@dataclass(frozen=True)
class EvalCase:
    """One user's evaluation: what the model sees and the item it must rank."""

    user: str
    input_items: list[int]
    input_types: list[int]
    input_ts: list[float]
    target: int


def target_ranks(scores: np.ndarray, cases: list[EvalCase]) -> np.ndarray:
    """0-based rank of each target among the candidates (reserved + seen items excluded)."""
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
    return metrics_from_ranks(target_ranks(np.tile(pop, (len(cases), 1)), cases))


def markov(train_items: list[list[int]], cases: list[EvalCase], n_items: int) -> dict:
    """count(last → j) in training data + popularity(j) / (max popularity + 1)."""
    pop = popularity(train_items, n_items)
    transitions: dict[int, np.ndarray] = {}
    for seq in train_items:
        for a, b in pairwise(seq):
            transitions.setdefault(a, np.zeros(n_items))[b] += 1.0
    tie_break = pop / (pop.max() + 1.0)
    scores = np.stack([transitions.get(c.input_items[-1], 0.0) + tie_break for c in cases])
    return metrics_from_ranks(target_ranks(scores, cases))


def text_only(text: np.ndarray, cases: list[EvalCase]) -> dict:
    """Cosine similarity between the last input item's text embedding and every candidate."""
    norm = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    scores = np.stack([norm @ norm[c.input_items[-1]] for c in cases])
    return metrics_from_ranks(target_ranks(scores, cases))
