"""Scoring sequences in batches: the ``Scorer`` protocol and its onnxruntime implementation.

``OnnxScorer.run`` is synchronous and CPU/GPU bound; it runs in the scoring process
(workers/scoring/child.py), and the worker awaits that process's answer on its event loop,
which keeps consuming while a batch runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import orjson

from models.contract import SPECIAL_ITEMS, UNKNOWN_ITEM
from models.features import pad_flat
from models.runtime import LoadedModel, load_artifact
from models.vocab import EVENT_TYPES
from workers.analytics.sentiment import lexicon_sentiment
from workers.pipeline.sequence import ModelRows, SeqEvent, UserSequence, model_rows
from workers.scoring.new_items import NewItems

_TEXT_THREAD = ThreadPoolExecutor(1, thread_name_prefix="sentiment")
"""Where a batch's texts are scored while its sequences run: onnxruntime releases the GIL, so
the two graphs overlap on a second core instead of adding up on one (the 2% of events with a
review cost the sequences' time again when run after them)."""

LENGTH_GROUP = 32
"""Sequences per onnxruntime call; one call costs about 0.1 ms on top of its work, so groups
of 32 keep that under 5% of a batch while letting widths follow the lengths closely."""


@dataclass
class Scores:
    """Model outputs for a batch, one row per scored sequence."""

    next_action: np.ndarray  # [B, n_types]
    top_items: list[list[str]]
    top_scores: np.ndarray  # [B, k]
    risk: np.ndarray  # [B]
    surprise: np.ndarray  # [B]
    sentiment: np.ndarray  # [B], in [-1, 1]; NaN where the event has no text
    json: PredictionJson | None = None  # as the scoring process wrote them (prediction_json)

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        """The rows of several batches' scores, in order (a batch scored in pieces)."""
        if len(parts) == 1:
            return parts[0]
        written = [p.json for p in parts if p.json is not None]
        return Scores(
            next_action=np.concatenate([p.next_action for p in parts]),
            top_items=[row for p in parts for row in p.top_items],
            top_scores=np.concatenate([p.top_scores for p in parts]),
            risk=np.concatenate([p.risk for p in parts]),
            surprise=np.concatenate([p.surprise for p in parts]),
            sentiment=np.concatenate([p.sentiment for p in parts]),
            json=(
                PredictionJson(
                    [row for j in written for row in j.next_action],
                    [row for j in written for row in j.top_items],
                )
                if len(written) == len(parts)
                else None
            ),
        )


class PredictionJson(NamedTuple):
    """Each row's ``next_action`` object and ``top_items`` array, as JSON."""

    next_action: list[bytes]
    top_items: list[bytes]


def prediction_json(scores: Scores, event_types: Sequence[str]) -> PredictionJson:
    """The two fields of a Prediction that come from the model, as JSON for each row.

    The scoring process writes them with its answer, so that the worker's event loop, the
    busier of the two, only splices them into each prediction (``orjson.Fragment``): building
    and serializing ten items and nine classes cost about 3 µs an event there."""
    return PredictionJson(
        [
            orjson.dumps(dict(zip(event_types, row, strict=True)))
            for row in scores.next_action.tolist()
        ],
        [
            orjson.dumps([{"item_id": i, "score": s} for i, s in zip(items, row, strict=True)])
            for items, row in zip(scores.top_items, scores.top_scores.tolist(), strict=True)
        ],
    )


def scores_from(outputs: dict, item_ids: Sequence[str] | np.ndarray) -> Scores:
    """Name the top items: the model returns their indices into ``item_ids``, and catalog
    items it learned after training as ``-(n + 1)`` into ``outputs["new_item_ids"]``.

    ``item_ids`` as an object array (what :class:`RemoteScorer` keeps) names a whole batch in
    one indexing step: 0.12 against 0.52 µs an event for a list comprehension."""
    names = item_ids if isinstance(item_ids, np.ndarray) else np.array(item_ids, dtype=object)
    top = outputs["top_items"]
    named = names[np.maximum(top, 0)]
    learned = top < 0
    if learned.any():
        new = outputs.get("new_item_ids", ())
        named[learned] = [new[-i - 1] for i in top[learned].tolist()]
    return Scores(
        next_action=outputs["next_action"],
        top_items=named.tolist(),
        top_scores=outputs["top_scores"],
        risk=outputs["risk"],
        surprise=outputs["surprise"],
        sentiment=outputs["sentiment"],
        json=(
            PredictionJson(outputs["next_action_json"], outputs["top_items_json"])
            if outputs.get("next_action_json")
            else None
        ),
    )


class Scorer(Protocol):
    """What the worker scores a batch with: each prefix in the sequence table's encoding and
    the text of its scored event, if any (see workers/scoring/process.py for why it crosses a
    process boundary)."""

    version: str
    precision: str  # the graph served: "fp32" or "int8"
    event_types: tuple[str, ...]

    async def score(self, prefixes: list[bytes], texts: list[str | None]) -> Scores: ...


class OnnxScorer:
    """A verified registry artifact behind onnxruntime (run by the scoring process)."""

    def __init__(self, loaded: LoadedModel, max_length: int) -> None:
        self.loaded = loaded
        self.version = loaded.version
        self.precision = loaded.precision
        self.event_types = loaded.vocab.types
        self.max_length = min(max_length, loaded.manifest.get("max_sequence_length", max_length))
        vocab = loaded.vocab
        self._item_index = vocab.item_index
        type_index = {t: i + 1 for i, t in enumerate(vocab.types)}
        # the model's index of each EVENT_TYPES code (0: a type it was not trained on)
        self._type_of_code = np.array([type_index.get(t, 0) for t in EVENT_TYPES], np.int64)
        self.item_ids = (*SPECIAL_ITEMS, *vocab.items)
        self._item_names = np.array(self.item_ids, dtype=object)  # see scores_from
        self.new_items = NewItems()

    @classmethod
    def from_directory(
        cls, directory: Path, max_length: int, threads: int | None = None, precision: str = "auto"
    ):
        return cls(load_artifact(directory, threads, precision), max_length)

    def prediction_json(self, outputs: dict[str, np.ndarray]) -> PredictionJson:
        """:func:`prediction_json` of this model's ``outputs`` (what the scoring process
        sends back with them)."""
        return prediction_json(scores_from(outputs, self._item_names), self.event_types)

    def run(
        self, sequences: list[list[SeqEvent]], texts: dict[int, str] | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`run_encoded` for sequences of events (tests and tools; the worker sends
        encoded prefixes)."""
        return self.run_encoded([UserSequence(list(s)).to_bytes() for s in sequences], texts)

    def run_encoded(
        self, prefixes: list[bytes], texts: dict[int, str] | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`run_rows` for prefixes in the sequence table's encoding (what the worker
        sends the scoring process)."""
        return self.run_rows(model_rows(prefixes), texts)

    def run_rows(
        self, rows: ModelRows, texts: dict[int, str] | None = None
    ) -> dict[str, np.ndarray]:
        """The model's outputs, one row per sequence, and ``sentiment`` of the rows that have
        a text in ``texts`` (row → text). Sequences run in groups of similar length so that
        short sequences are not padded to the longest.

        The network is causal with positions counted from the newest event and padding masked
        out, so a sequence's outputs do not depend on how wide its batch is; what the width does
        decide is the cost, which is linear in it. Users' sequences are mostly short (in the
        bench the median is 6 events while a batch of 256 nearly always holds one of 50), so
        sorting by length and running groups of ``LENGTH_GROUP`` cuts the work by about 60%.
        The whole batch is padded once; each group is its rows' last columns.
        """
        n = len(rows.lengths)
        texts = texts or {}
        pending = _TEXT_THREAD.submit(self.sentiment, texts, n) if texts else None
        lengths = np.minimum(rows.lengths, self.max_length)
        padded = pad_flat(
            rows.lengths,
            [self._item_index(i) for i in rows.items],
            self._type_of_code[rows.type_codes],
            rows.ts,
            length=int(lengths.max(initial=0)),
        )
        order = np.argsort(lengths, kind="stable")
        outputs: dict[str, np.ndarray] = {}
        for start in range(0, n, LENGTH_GROUP):
            group = order[start : start + LENGTH_GROUP]
            width = max(2, int(lengths[group[-1]]))  # the group's longest: sorted ascending
            inputs = {name: matrix[group, -width:] for name, matrix in padded.items()}
            for name, values in self.loaded.run_graph(inputs).items():
                if name not in outputs:
                    outputs[name] = np.empty((n, *values.shape[1:]), values.dtype)
                outputs[name][group] = values
        if n:  # the item index, if any, searched once for the whole batch
            outputs = self.loaded.complete(outputs, padded)
        outputs["sentiment"] = pending.result() if pending else self.sentiment(texts, n)
        if n:
            outputs["new_item_ids"] = np.array(self.new_items.merge(outputs), dtype=object)
        return outputs

    def learn_items(self, items: list[tuple[str, str]]) -> int:
        """Embed the catalog items (id, text) this model does not know, so that they can be
        ranked; returns how many it took (none when the artifact has no text encoder)."""
        encoder = self.loaded.text_encoder
        new = [(i, t) for i, t in items if self._item_index(i) == UNKNOWN_ITEM]
        if encoder is None or not new:
            return 0
        for start in range(0, len(new), 64):
            chunk = new[start : start + 64]
            vectors = encoder.encode([t for _, t in chunk])["item_vector"]
            self.new_items.put([i for i, _ in chunk], vectors)
        return len(new)

    def sentiment(self, texts: dict[int, str], rows: int) -> np.ndarray:
        """float32 [rows]: each text's sentiment in [-1, 1], NaN on rows without text.

        From the artifact's sentiment model; an artifact trained without one falls back to the
        opinion-word lexicon (workers/analytics/sentiment.py), NaN where it finds no opinion."""
        out = np.full(rows, np.nan, dtype=np.float32)
        if not texts:
            return out
        index = list(texts)
        model = self.loaded.sentiment
        if model is not None:
            out[index] = model.score([texts[i] for i in index])
        else:
            for i in index:
                value = lexicon_sentiment(texts[i])
                out[i] = np.nan if value is None else value
        return out
