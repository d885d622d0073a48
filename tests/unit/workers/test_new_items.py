"""Catalog items ranked beside the model's own: the merged top-k is exactly the top-k of one
softmax over both sets of items."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from workers.scoring import wire
from workers.scoring.new_items import NewItems, apply_catalog_request
from workers.scoring.scorer import Scores, prediction_json, scores_from


def _graph_outputs(user: np.ndarray, table: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """What the exported graph returns for these user vectors over its own ``table``."""
    logits = user @ table.T
    lse = np.log(np.exp(logits).sum(axis=1))
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return {
        "top_items": top.astype(np.int64),
        "top_scores": np.exp(np.take_along_axis(logits, top, axis=1) - lse[:, None]).astype(
            np.float32
        ),
        "user_vector": user.astype(np.float32),
        "log_normaliser": lse.astype(np.float32),
    }


@pytest.mark.parametrize("n_new", [1, 3, 40])
def test_merge_equals_one_softmax_over_both_catalogs(n_new: int) -> None:
    rng = np.random.default_rng(n_new)
    users, base, extra = (
        rng.normal(size=(16, 8)),
        rng.normal(size=(50, 8)),
        rng.normal(size=(n_new, 8)),
    )
    k = 5
    outputs = _graph_outputs(users, base, k)
    new = NewItems()
    ids = [f"new{j}" for j in range(n_new)]
    new.put(ids, extra)
    names = new.merge(outputs)

    everything = np.concatenate([base, extra])
    logits = users @ everything.T
    probs = np.exp(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    got = [
        [i if i >= 0 else 50 + ids.index(names[-i - 1]) for i in row]
        for row in outputs["top_items"].tolist()
    ]
    assert got == expected.tolist()
    np.testing.assert_allclose(
        outputs["top_scores"], np.take_along_axis(probs, expected, axis=1), rtol=1e-4
    )


def test_new_item_ids_cross_the_wire_and_are_named() -> None:
    rng = np.random.default_rng(0)
    outputs = _graph_outputs(rng.normal(size=(2, 4)), rng.normal(size=(6, 4)), 3)
    new = NewItems()
    new.put(["fresh"], 10 * outputs["user_vector"][:1])  # the first user's favourite by far
    outputs["new_item_ids"] = np.array(new.merge(outputs), dtype=object)
    outputs.update(
        next_action=np.zeros((2, 2), np.float32),
        risk=np.zeros(2, np.float32),
        surprise=np.zeros(2, np.float32),
        sentiment=np.full(2, np.nan, np.float32),
    )
    decoded = wire.decode_outputs(wire.encode_outputs(outputs))
    scores = scores_from(decoded, [f"i{j}" for j in range(6)])
    assert scores.top_items[0][0] == "fresh"
    assert all(item.startswith("i") or item == "fresh" for row in scores.top_items for item in row)
    assert scores.json is None  # none written: the worker writes it itself


def test_each_rows_prediction_json_crosses_the_wire_as_the_scoring_process_wrote_it() -> None:
    rng = np.random.default_rng(1)
    outputs = _graph_outputs(rng.normal(size=(3, 4)), rng.normal(size=(6, 4)), 3)
    outputs.update(
        next_action=rng.random((3, 2)).astype(np.float32),
        risk=np.zeros(3, np.float32),
        surprise=np.zeros(3, np.float32),
        sentiment=np.full(3, np.nan, np.float32),
    )
    names = [f"i{j}" for j in range(6)]
    written = prediction_json(scores_from(outputs, names), ("view", "click"))
    scores = scores_from(wire.decode_outputs(wire.encode_outputs(outputs, *written)), names)
    assert scores.json == written
    assert Scores.concat([scores, scores]).json == (written[0] * 2, written[1] * 2)
    for row in range(3):
        assert orjson.loads(scores.json.next_action[row]) == dict(
            zip(("view", "click"), outputs["next_action"][row].tolist(), strict=True)
        )
        assert [t["item_id"] for t in orjson.loads(scores.json.top_items[row])] == (
            scores.top_items[row]
        )


def test_catalog_updates_put_remove_and_evict_the_oldest() -> None:
    from collections import OrderedDict

    catalog: OrderedDict[str, str] = OrderedDict()
    put, removed = apply_catalog_request(catalog, {"put": [["a", "x"], ["b", "y"]], "limit": 3})
    assert [i for i, _ in put] == ["a", "b"] and removed == []
    _, removed = apply_catalog_request(catalog, {"put": [["c", "z"], ["a", "x2"]], "limit": 3})
    assert removed == [] and list(catalog) == ["b", "c", "a"]  # re-published: newest again
    _, removed = apply_catalog_request(catalog, {"put": [["d", "w"]], "remove": ["c"], "limit": 2})
    assert removed == ["c", "b"] and list(catalog) == ["a", "d"]


class _Learning:
    """A scorer that learns every item it is given (a unit fake for the child's models)."""

    def __init__(self) -> None:
        self.new_items = NewItems()

    def learn_items(self, items: list[tuple[str, str]]) -> int:
        self.new_items.put([i for i, _ in items], np.ones((len(items), 2)))
        return len(items)


def test_an_item_evicted_by_its_own_request_is_not_ranked() -> None:
    from collections import OrderedDict

    from workers.scoring.child import update_catalog

    catalog: OrderedDict[str, str] = OrderedDict()
    scorer = _Learning()
    update_catalog(catalog, [scorer], {"put": [["a", "x"], ["b", "y"], ["c", "z"]], "limit": 2})
    assert list(catalog) == ["b", "c"] and len(scorer.new_items) == 2
    update_catalog(catalog, [scorer], {"remove": ["b"], "limit": 2})
    assert list(catalog) == ["c"] and len(scorer.new_items) == 1
