"""Streamed full ranking (chunks of users by chunks of items) against the dense reference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models.contract import N_RESERVED_ITEMS
from models.evaluate import EvalCase, streamed_ranks, target_ranks
from models.network import NetworkConfig, SequenceTransformer
from models.train import ModelScores, _case_batch


def _cases(n_cases: int, n_items: int, rng: random.Random) -> list[EvalCase]:
    cases = []
    for n in range(n_cases):
        length = rng.randint(1, 8)
        items = [rng.randrange(n_items) for _ in range(length)]  # reserved slots included
        target = rng.randrange(N_RESERVED_ITEMS, n_items)
        if rng.random() < 0.2:
            items.append(target)  # a target the user has seen before still counts
        cases.append(EvalCase(f"u{n}", items, [1] * len(items), [0.0] * len(items), target))
    return cases


@pytest.mark.parametrize(("users_per_chunk", "items_per_chunk"), [(3, 5), (7, 64), (100, 4)])
def test_streamed_ranks_equal_the_dense_ones_with_ties(users_per_chunk, items_per_chunk) -> None:
    rng = random.Random(users_per_chunk)
    n_items = 37
    cases = _cases(40, n_items, rng)
    scores = np.random.default_rng(0).integers(0, 4, (len(cases), n_items)).astype(np.float32)

    def block(rows: slice, items: slice) -> np.ndarray:
        return scores[rows, items].copy()

    streamed = streamed_ranks(block, cases, n_items, users_per_chunk, items_per_chunk)
    assert streamed.tolist() == target_ranks(scores, cases).tolist()
    assert len(set(streamed.tolist())) > 5  # many ranks and many ties: not a trivial case


def test_model_scores_streamed_equal_the_dense_matrix() -> None:
    torch.manual_seed(0)
    cfg = NetworkConfig(n_items=50, n_types=13, hidden=16, layers=1, heads=2, max_positions=16)
    net = SequenceTransformer(cfg, torch.randn(50, 384) * 0.05, torch.ones(50)).eval()
    cases = _cases(30, 50, random.Random(1))
    with torch.inference_mode():
        b = _case_batch(cases, 16)
        dense = net(b["item_ids"], b["event_types"], b["time_gaps"])[0][:, -1].numpy()
        streamed = streamed_ranks(ModelScores(net, cases, 16), cases, 50, 8, 16)
    assert streamed.tolist() == target_ranks(dense, cases).tolist()
