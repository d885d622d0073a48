"""Tiny-configuration tests of the network, the metrics and the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.evaluate import EvalCase, markov, metrics_from_ranks, most_popular, target_ranks
from models.features import gap_buckets, pad_batch
from models.network import NetworkConfig, SequenceTransformer, ServingModel


@pytest.fixture
def net() -> SequenceTransformer:
    torch.manual_seed(0)
    cfg = NetworkConfig(n_items=20, n_types=13, hidden=32, layers=2, heads=2, max_positions=16)
    seen = torch.ones(20)
    seen[17:] = 0  # three items never seen in training
    return SequenceTransformer(cfg, torch.randn(20, 384) * 0.05, seen).eval()


def _inputs(items, types, ts, length=None):
    return {k: torch.from_numpy(v) for k, v in pad_batch(items, types, ts, length).items()}


def test_shapes(net) -> None:
    b = _inputs([[3, 4, 5], [6, 7]], [[1, 2, 3], [1, 1]], [[0, 10, 20], [0, 5]])
    items, types, risk = net(b["item_ids"], b["event_types"], b["time_gaps"])
    assert items.shape == (2, 3, 20) and types.shape == (2, 3, 13) and risk.shape == (2, 3)


def test_left_padding_does_not_change_the_latest_output(net) -> None:
    short = _inputs([[3, 4, 5]], [[1, 2, 3]], [[0, 10, 20]])
    padded = _inputs([[3, 4, 5]], [[1, 2, 3]], [[0, 10, 20]], length=9)
    a = net(short["item_ids"], short["event_types"], short["time_gaps"])[0][:, -1]
    b = net(padded["item_ids"], padded["event_types"], padded["time_gaps"])[0][:, -1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_causal_future_events_do_not_leak(net) -> None:
    one = _inputs([[3, 4, 5, 6]], [[1, 2, 3, 4]], [[0, 1, 2, 3]])
    two = _inputs([[3, 4, 5, 9]], [[1, 2, 3, 7]], [[0, 1, 2, 3]])
    a = net(one["item_ids"], one["event_types"], one["time_gaps"])[0][:, :3]
    b = net(two["item_ids"], two["event_types"], two["time_gaps"])[0][:, :3]
    torch.testing.assert_close(a, b)


def test_unseen_items_are_ranked_by_text(net) -> None:
    table = net.item_table()
    torch.testing.assert_close(table[18], net.text_proj(net.text[18]))  # no ID part
    net.text[18] += 1.0
    assert not torch.allclose(net.item_table()[18], table[18])


def test_items_sharing_a_text_share_its_row(net) -> None:
    """Distinct-text rows give the network exactly what a row per item gives."""
    of_item = torch.tensor([0, 0, 0] + [1, 2, 1, 2, 3] * 3 + [1, 2])
    rows = torch.cat([torch.zeros(1, 384), torch.randn(3, 384) * 0.05])
    shared = SequenceTransformer(net.config, rows, net.seen, of_item).eval()
    dense = SequenceTransformer(net.config, rows[of_item], net.seen).eval()
    dense.load_state_dict(
        {**shared.state_dict(), "text": rows[of_item], "text_of_item": torch.arange(20)}
    )
    torch.testing.assert_close(shared.item_table(), dense.item_table())
    items = torch.tensor([3, 8, 19])
    torch.testing.assert_close(shared.item_vectors(items), dense.item_vectors(items))
    # item 18 (never seen) shares row 1 with item 3: its vector is that text alone
    torch.testing.assert_close(shared.item_table()[18], shared.text_proj(rows[1]))


def test_serving_outputs(net) -> None:
    serving = ServingModel(net, torch.linspace(0, 20, 101)).eval()
    b = _inputs([[3], [3, 4, 5]], [[1], [1, 2, 3]], [[0], [0, 5, 9]])
    nxt, top, scores, risk, surprise, *_ = serving(b["item_ids"], b["event_types"], b["time_gaps"])
    assert nxt.shape == (2, 12) and torch.allclose(nxt.sum(-1), torch.ones(2))
    assert top.shape == (2, 10) and bool((top >= 3).all())  # reserved slots never recommended
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    assert surprise[0] == 0.0  # a first event has nothing to be surprising against
    assert bool(((risk > 0) & (risk < 0.1)).all())  # untrained risk head sits at its prior


def test_gap_buckets() -> None:
    assert gap_buckets(np.array([100.0, 100.0, 101.0, 1100.0])).tolist() == [0, 1, 2, 10]


def test_rank_ties_and_exclusions() -> None:
    scores = np.array([[0, 0, 0, 5.0, 9.0, 5.0, 5.0, 1.0]])
    case = EvalCase("u", [4], [1], [0.0], target=5)
    # item 4 excluded (in input), item 3 ties and has a smaller id → ahead; item 6 ties, larger
    assert target_ranks(scores, [case]).tolist() == [1]
    m = metrics_from_ranks(np.array([0, 1, 10]))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_baselines_by_hand() -> None:
    train = [[3, 4, 5], [3, 4], [4, 5]]  # pop 3:2 4:3 5:2; 3→4 and 4→5 twice each
    cases = [EvalCase("a", [3], [1], [0.0], target=4), EvalCase("b", [4], [1], [0.0], target=3)]
    pop = most_popular(train, cases, 7)
    assert pop["hr@1"] == 1.0  # a: 4 is most popular → rank 0; b: 4 excluded, 3 ties 5 → rank 0
    mk = markov(train, cases, 7)
    assert mk["hr@1"] == 0.5  # a: 3→4 seen twice → rank 0; b: 4→5 twice beats 3 → rank 1
    assert mk["hr@10"] == 1.0


def test_serving_blocks_match_gpt2_blocks(net) -> None:
    """Serving runs its own reshape-free copy of the GPT-2 block, and computes the final block
    for its last queries only; all positions, or the last ones, must be exactly GPT-2's rows,
    padding included."""
    b = _inputs(
        [[3, 4, 5, 6, 7], [6, 7], [9]], [[1, 2, 3, 4, 1], [1, 1], [2]], [[0, 1, 2, 3, 4]] * 3
    )
    table = net.item_table()
    args = (b["item_ids"], b["event_types"], b["time_gaps"], table)
    full = net.encode(*args)
    torch.testing.assert_close(net.encode(*args, last=2), full[:, -2:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(net.encode(*args, last=1), full[:, -1:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(net.encode(*args, last=5), full, atol=1e-6, rtol=1e-5)
