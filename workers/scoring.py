"""Scoring sequences in batches: the ``Scorer`` protocol and its onnxruntime implementation.

``score`` is synchronous and CPU/GPU bound; the worker calls it in a thread so the event loop
keeps consuming while a batch runs (onnxruntime releases the GIL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from models.features import pad_batch
from models.runtime import LoadedModel, load_artifact
from workers.sequence import SeqEvent


@dataclass
class Scores:
    """Model outputs for a batch, one row per scored sequence."""

    next_action: np.ndarray  # [B, n_types]
    top_items: list[list[str]]
    top_scores: np.ndarray  # [B, k]
    risk: np.ndarray  # [B]
    surprise: np.ndarray  # [B]


class Scorer(Protocol):
    """Anything that turns sequences into scores (ONNX here; fakes only in unit tests)."""

    version: str
    event_types: tuple[str, ...]

    def score(self, sequences: list[list[SeqEvent]]) -> Scores: ...


class OnnxScorer:
    """A verified registry artifact behind onnxruntime."""

    def __init__(self, loaded: LoadedModel, max_length: int) -> None:
        self.loaded = loaded
        self.version = loaded.version
        self.event_types = loaded.vocab.types
        self.max_length = min(max_length, loaded.manifest.get("max_sequence_length", max_length))
        vocab = loaded.vocab
        self._item_index = vocab.item_index
        self._type_index = {t: i + 1 for i, t in enumerate(vocab.types)}
        self._item_ids = ("<pad>", "<none>", "<unknown>", *vocab.items)

    @classmethod
    def from_directory(cls, directory: Path, max_length: int, threads: int | None = None):
        return cls(load_artifact(directory, threads), max_length)

    def score(self, sequences: list[list[SeqEvent]]) -> Scores:
        seqs = [s[-self.max_length :] for s in sequences]
        inputs = pad_batch(
            [[self._item_index(e.item_id) for e in s] for s in seqs],
            [[self._type_index.get(e.type, 0) for e in s] for s in seqs],
            [[e.ts for e in s] for s in seqs],
        )
        out = self.loaded.run(inputs)
        ids = self._item_ids
        return Scores(
            next_action=out["next_action"],
            top_items=[[ids[i] for i in row] for row in out["top_items"].tolist()],
            top_scores=out["top_scores"],
            risk=out["risk"],
            surprise=out["surprise"],
        )
