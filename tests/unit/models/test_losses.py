"""The next-item losses: the chunked full softmax is exact; the sampled one is corrected."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from models import losses
from models.losses import SampledSoftmax, excluded_items, full_softmax
from models.network import NetworkConfig, SequenceTransformer


@pytest.fixture
def net() -> SequenceTransformer:
    torch.manual_seed(0)
    seen = torch.ones(30)
    seen[:3] = 0
    seen[25:] = 0  # not in the training data: never a candidate
    cfg = NetworkConfig(n_items=30, n_types=5, hidden=8, layers=1, heads=2, max_positions=8)
    return SequenceTransformer(cfg, torch.randn(30, 384) * 0.1, seen)


def test_full_softmax_in_chunks_is_the_plain_cross_entropy(net, monkeypatch) -> None:
    monkeypatch.setattr(losses, "POSITIONS_PER_CHUNK", 7)  # 50 positions: 8 chunks
    h = torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(3, 25, (50,))
    excluded = excluded_items(net.seen, 3)
    table = net.item_table()
    chunked = full_softmax(h, targets, table, excluded)
    plain = F.cross_entropy(h @ table.T + excluded, targets)
    torch.testing.assert_close(chunked, plain)
    (g_chunked,) = torch.autograd.grad(chunked, h)
    (g_plain,) = torch.autograd.grad(plain, h)
    torch.testing.assert_close(g_chunked, g_plain)


def test_sampled_candidates_hold_the_targets_and_only_trained_items(net) -> None:
    frequency = torch.zeros(30)
    frequency[3:25] = torch.arange(1.0, 23.0)
    sampled = SampledSoftmax(frequency, negatives=16, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([24, 5, 5, 9])
    items, log_chance = sampled.candidates(targets)
    assert set(targets.tolist()) <= set(items.tolist())
    assert items.tolist() == sorted(set(items.tolist()))  # unique and sorted
    assert int(items.min()) >= 3 and int(items.max()) < 25
    assert bool((log_chance <= 0).all())
    # a frequent item is a candidate more often than a rare one: its logit is lowered more
    pos = {int(i): n for n, i in enumerate(items)}
    assert log_chance[pos[24]] > log_chance[pos[5]]


def test_sampled_softmax_with_every_item_drawn_is_the_full_softmax(net) -> None:
    frequency = torch.zeros(30)
    frequency[3:25] = 1.0
    # so many uniform draws that every trained item is a candidate with chance ≈ 1 (logQ ≈ 0)
    sampled = SampledSoftmax(frequency, negatives=5000, generator=torch.Generator().manual_seed(1))
    h = torch.randn(12, 8)
    targets = torch.randint(3, 25, (12,))
    keep = torch.ones(30)
    full = full_softmax(h, targets, net.item_table(keep), excluded_items(net.seen, 3))
    torch.testing.assert_close(sampled(net, h, targets, keep), full, atol=1e-4, rtol=1e-4)
