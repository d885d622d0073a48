"""The candidate path of big catalogs: the item index, the normaliser estimate, and the
candidate graph completed by them against the exact graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.contract import CANDIDATE_OUTPUTS, N_RESERVED_ITEMS, OUTPUTS
from models.export import export_onnx, parity
from models.item_index import IndexConfig, ItemIndex, build_index, candidate_outputs
from models.network import NetworkConfig, SequenceTransformer

D = 8


def _table(n_items: int, seed: int = 0) -> np.ndarray:
    table = np.random.default_rng(seed).standard_normal((n_items, D)).astype(np.float32)
    table[:N_RESERVED_ITEMS] = 0.0  # reserved slots are never indexed
    return table


def _exact_lse(queries: np.ndarray, table: np.ndarray) -> np.ndarray:
    logits = queries.astype(np.float64) @ table[N_RESERVED_ITEMS:].T.astype(np.float64)
    peak = logits.max(axis=1)
    return peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1))


def test_normaliser_is_exact_when_head_and_sample_cover_the_catalog() -> None:
    table = _table(303)
    index = ItemIndex(
        build_index(table, IndexConfig()), np.arange(40) * 3, IndexConfig(sample=10_000)
    )
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((6, D)).astype(np.float32)
    # known items: in the head, in the sample, repeated, and reserved slots to be ignored
    known = np.array(
        [[3, 3, 6, 50], [0, 1, 2, 7], [200, 201, 200, 3], [5, 9, 12, 300]] + [[4] * 4] * 2
    )
    known_logits = np.einsum("bd,bkd->bk", queries, table[known])
    got = index.log_normaliser(queries, known, known_logits)
    np.testing.assert_allclose(got, _exact_lse(queries, table), atol=1e-5)
    np.testing.assert_allclose(
        index.log_normaliser(queries, known[:, :0], known_logits[:, :0]),
        _exact_lse(queries, table),
        atol=1e-5,
    )


def test_sampled_normaliser_is_unbiased_in_probability_space() -> None:
    """With a small sample the estimate of Σ exp is unbiased: over many samples it averages
    to the exact sum (the log of it is what serving uses)."""
    table = _table(2_003)
    index = build_index(table, IndexConfig())
    query = np.random.default_rng(2).standard_normal((1, D)).astype(np.float32) * 0.5
    none = np.zeros((1, 0), dtype=np.int64)
    sums = [
        np.exp(
            ItemIndex(index, np.arange(20), IndexConfig(sample=64, seed=s)).log_normaliser(
                query, none, none.astype(np.float32)
            )[0]
        )
        for s in range(300)
    ]
    exact = np.exp(_exact_lse(query, table)[0])
    assert abs(np.mean(sums) / exact - 1.0) < 0.03
    assert np.std(sums) > 0  # each estimate does depend on its sample


def test_search_returns_exact_top_items_and_logits_on_a_small_catalog() -> None:
    table = _table(503)
    exhaustive = IndexConfig(probe=10_000)  # every list scanned: exact
    index = ItemIndex(build_index(table, exhaustive), np.arange(10), exhaustive)
    assert index.index.nlist > 1 and index.probe == index.index.nlist
    queries = np.random.default_rng(3).standard_normal((20, D)).astype(np.float32)
    items, logits = index.search(queries, 10)
    scores = queries @ table.T
    scores[:, :N_RESERVED_ITEMS] = -np.inf
    np.testing.assert_array_equal(items, np.argsort(-scores, axis=1)[:, :10])
    np.testing.assert_allclose(logits, np.take_along_axis(scores, items, axis=1), rtol=1e-5)


@pytest.fixture
def net() -> SequenceTransformer:
    torch.manual_seed(0)
    cfg = NetworkConfig(n_items=60, n_types=13, hidden=16, layers=1, heads=2, top_k=5)
    return SequenceTransformer(cfg, torch.randn(60, 384) * 0.05, torch.ones(60)).eval()


def _run(path: Path, names, batch) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(list(names), batch), strict=True))


def test_candidate_graph_completed_by_the_index_equals_the_exact_graph(net, tmp_path) -> None:
    quantiles = np.linspace(0.0, 12.0, 1001).astype(np.float32)
    exact_graph = export_onnx(net, quantiles, tmp_path / "exact.onnx")
    candidate_graph = export_onnx(net, quantiles, tmp_path / "cand.onnx", candidates=True)
    rng = np.random.default_rng(4)
    batch = {
        "item_ids": rng.integers(1, 60, (9, 12)),
        "event_types": rng.integers(1, 13, (9, 12)),
        "time_gaps": rng.integers(0, 32, (9, 12)),
    }
    batch["item_ids"][0, :6] = batch["event_types"][0, :6] = batch["time_gaps"][0, :6] = 0
    batch["item_ids"][1, :11] = batch["event_types"][1, :11] = batch["time_gaps"][1, :11] = 0
    batch["item_ids"][2, -1] = 1  # the latest event has no item
    assert parity(candidate_graph, tmp_path / "cand.onnx", batch) <= 1e-4
    assert parity(exact_graph, tmp_path / "exact.onnx", batch) <= 1e-4

    table = net.item_table().detach().numpy()
    # every item in the head: the normaliser is summed exactly, so the outputs must agree
    exhaustive = IndexConfig(head=57, probe=10_000)
    index = ItemIndex(build_index(table, exhaustive), np.arange(57), exhaustive)
    graph = _run(tmp_path / "cand.onnx", CANDIDATE_OUTPUTS, batch)
    got = candidate_outputs(index, graph, batch, quantiles, k=5)
    want = _run(tmp_path / "exact.onnx", OUTPUTS, batch)
    assert set(got) == set(OUTPUTS)
    np.testing.assert_array_equal(got["top_items"], want["top_items"])
    for name in ("top_scores", "log_normaliser", "next_action", "risk", "user_vector"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    assert np.max(np.abs(got["surprise"] - want["surprise"])) <= 1 / 1001 + 1e-6
    assert got["surprise"][1] == 0.0  # a single event has no prefix to be surprised by


def test_the_fewest_lists_reaching_the_target_recall_are_probed() -> None:
    from models.index_export import smallest_probe

    table = _table(8_003)
    index = ItemIndex(build_index(table, IndexConfig()), np.arange(10), IndexConfig())
    queries = np.random.default_rng(5).standard_normal((200, D)).astype(np.float32)
    scores = queries @ table.T
    scores[:, :N_RESERVED_ITEMS] = -np.inf
    exact = np.argsort(-scores, axis=1)[:, :10]
    recall = smallest_probe(index, queries, exact, target=0.9)
    assert recall >= 0.9 and 1 < index.probe < index.index.nlist
    chosen = index.probe
    assert smallest_probe(index, queries, exact, target=1.01) < 1.01 + 1e-9
    assert index.probe == index.index.nlist  # an unreachable target probes every list
    index.set_probe(chosen // 2)
    found = index.search(queries, 10)[0]
    below = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert below < 0.9  # half as many lists would not have done


def test_a_query_short_of_candidates_is_searched_over_every_list() -> None:
    table = _table(1_003)
    config = IndexConfig(lists=25, candidates=5)
    index = ItemIndex(build_index(table, config), np.arange(5), config)
    assert index.probe == 1  # about 40 items in the one list probed
    queries = np.random.default_rng(6).standard_normal((50, D)).astype(np.float32)
    items, logits = index.search(queries, 200)
    assert (items >= N_RESERVED_ITEMS).all() and np.isfinite(logits).all()
    scores = queries @ table.T
    scores[:, :N_RESERVED_ITEMS] = -np.inf
    np.testing.assert_array_equal(items, np.argsort(-scores, axis=1)[:, :200])
    # the probe covers twice the candidates on average when that is more than asked
    assert ItemIndex(build_index(table, config), np.arange(5), IndexConfig(lists=25)).probe == 5
