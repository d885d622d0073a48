"""Items the served model never saw, ranked from their text: the catalog's side of scoring.

The exported graph ranks the items of its vocabulary. A catalog item published after training
gets a vector from the artifact's text encoder (the trainer's own text path, so it is the
vector the item would have had as a cold-start item in training), and each batch's top-k is
merged with the best of these: an item's logit is ``user_vector · vector``, and every
probability is renormalised over both sets (``log_normaliser`` counts the new items too).
The surprise score keeps the graph's normaliser: new items change it only when one of them is
the observed event's item, which the graph sees as "unknown" until the next training.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


def apply_catalog_request(catalog: OrderedDict[str, str], request: dict) -> tuple[list, list[str]]:
    """Apply one catalog request (``put`` [id, text] pairs, ``remove`` ids, the size ``limit``)
    to ``catalog`` (id → text, oldest first); returns (the items put, the ids removed or
    evicted as the oldest beyond the limit). The scoring process and its parent, which keeps a
    copy to replay into a restarted child, apply the same requests with this one function."""
    put = [(str(i), str(t)) for i, t in request.get("put", [])]
    removed = [str(i) for i in request.get("remove", []) if catalog.pop(str(i), None) is not None]
    for item_id, text in put:
        catalog[item_id] = text
        catalog.move_to_end(item_id)
    while len(catalog) > int(request.get("limit", len(catalog))):
        removed.append(catalog.popitem(last=False)[0])
    return put, removed


class NewItems:
    """Vectors of the catalog items one model does not know, by item id."""

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self._ids: list[str] = []
        self._matrix: np.ndarray | None = None  # rebuilt on the first batch after a change

    def __len__(self) -> int:
        return len(self._vectors)

    def put(self, ids: list[str], vectors: np.ndarray) -> None:
        for item_id, vector in zip(ids, vectors, strict=True):
            self._vectors[item_id] = np.asarray(vector, dtype=np.float32)
        self._matrix = None

    def remove(self, ids: list[str]) -> None:
        for item_id in ids:
            self._vectors.pop(item_id, None)
        self._matrix = None

    def _stacked(self) -> tuple[list[str], np.ndarray]:
        if self._matrix is None:
            self._ids = list(self._vectors)
            self._matrix = np.stack([self._vectors[i] for i in self._ids])
        return self._ids, self._matrix

    def merge(self, outputs: dict[str, np.ndarray]) -> list[str]:
        """Merge the new items into ``outputs``' top-k in place; returns the ids of the new
        items it placed there. A new item appears in ``top_items`` as ``-(n + 1)``, ``n`` its
        position in the returned list (the graph's own items keep their indices)."""
        if not self._vectors:
            return []
        ids, matrix = self._stacked()
        top_items, top_scores = outputs["top_items"], outputs["top_scores"]
        k = top_items.shape[1]
        base_lse = outputs["log_normaliser"].astype(np.float64)
        logits = outputs["user_vector"].astype(np.float64) @ matrix.T.astype(np.float64)
        peak = logits.max(axis=1, keepdims=True)
        new_lse = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        lse = np.logaddexp(base_lse, new_lse)
        m = min(k, len(ids))
        best = np.argpartition(-logits, m - 1, axis=1)[:, :m]
        base_logits = np.log(np.maximum(top_scores.astype(np.float64), 1e-300))
        candidates = np.concatenate(
            [base_logits + base_lse[:, None], np.take_along_axis(logits, best, axis=1)], axis=1
        )
        labels = np.concatenate([top_items, -(best + 1)], axis=1)
        order = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(labels, order, axis=1)
        used = np.unique(-chosen[chosen < 0] - 1)
        position = {int(j): n for n, j in enumerate(used)}
        for r, c in zip(*np.nonzero(chosen < 0), strict=True):
            chosen[r, c] = -(position[int(-chosen[r, c] - 1)] + 1)
        outputs["top_items"] = chosen
        outputs["top_scores"] = np.exp(
            np.take_along_axis(candidates, order, axis=1) - lse[:, None]
        ).astype(np.float32)
        return [ids[int(j)] for j in used]
