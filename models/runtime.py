"""Loads a registry artifact into onnxruntime, refusing anything that is not exactly right.

Importable without torch (the worker image has none). Before a session exists the artifact's
sha256, vocabulary hashes, single-file layout and operator domains are checked; after, the
input/output signature and a golden batch with finite outputs. A refused model raises
:class:`ModelRefused` with the reason, and the caller keeps serving what it had.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from models.contract import (
    CANDIDATE_OUTPUTS,
    INPUTS,
    INT8_GRAPH,
    N_RESERVED_ITEMS,
    OUTPUTS,
    PRECISIONS,
    sha256_of,
)
from models.item_index import INDEX_FILE, IndexConfig, ItemIndex, candidate_outputs, read_index
from models.onnx_session import ModelRefused, checked_session, providers_available
from models.text_runtime import SentimentModel, TextEncoder, load_sentiment, load_text_encoder
from models.vocab import Vocab

log = logging.getLogger(__name__)

#: Everything a model directory may hold: the graph, JSON metadata, safetensors weights (for
#: fine-tuning), the item index of a big catalog (faiss's own layout) and the report plot.
#: Anything else, serialized Python objects included, is refused.
ARTIFACT_SUFFIXES = (".onnx", ".json", ".safetensors", ".faiss", ".png")


def golden_batch(vocab: Vocab, batch: int = 3, length: int = 5) -> dict[str, np.ndarray]:
    """A small deterministic batch with padding, used to prove a model gives finite outputs."""
    rng = np.random.default_rng(0)
    items = rng.integers(
        N_RESERVED_ITEMS, max(N_RESERVED_ITEMS + 1, vocab.n_items), size=(batch, length)
    )
    types = rng.integers(1, vocab.n_types, size=(batch, length))
    gaps = rng.integers(0, 20, size=(batch, length))
    items[0, :2] = types[0, :2] = gaps[0, :2] = 0
    return {
        "item_ids": items.astype(np.int64),
        "event_types": types.astype(np.int64),
        "time_gaps": gaps.astype(np.int64),
    }


@dataclass
class LoadedModel:
    """A verified model ready to score: session, manifest, vocabulary."""

    version: str
    directory: Path
    manifest: dict
    vocab: Vocab
    session: object
    provider: str
    sentiment: SentimentModel | None = None  # None: trained without one (lexicon fallback)
    text_encoder: TextEncoder | None = None  # None: its items had no text (no catalog path)
    item_index: ItemIndex | None = None  # None: exact top-k in the graph
    precision: str = "fp32"  # or "int8": the artifact's int8 copy of the graph serves

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The contract's ``OUTPUTS``, whichever way the artifact serves."""
        return self.complete(self.run_graph(inputs), inputs)

    def complete(self, graph: dict[str, np.ndarray], inputs: dict) -> dict[str, np.ndarray]:
        """The graph's outputs as the contract's ``OUTPUTS``: as they are for an exact graph,
        completed through the item index for a candidate one. ``inputs`` needs only the last
        two columns of ``item_ids`` and ``event_types``, so a caller that ran the graph in
        pieces can complete all its rows at once (one index search a batch)."""
        if self.item_index is None:
            return graph
        return candidate_outputs(
            self.item_index, graph, inputs, self.surprise_quantiles, int(self.manifest["top_k"])
        )

    @functools.cached_property
    def surprise_quantiles(self) -> np.ndarray:
        """The candidate path's calibration table (the exact graph holds its own)."""
        return np.asarray(self.manifest["surprise_quantiles"], dtype=np.float32)

    def run_graph(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(graph_outputs(self.manifest))
        return dict(zip(names, self.session.run(names, inputs), strict=True))  # type: ignore[attr-defined]


def graph_outputs(manifest: dict) -> dict[str, tuple[str, int]]:
    """The outputs the artifact's graph must have: exact, or completed by the item index."""
    return CANDIDATE_OUTPUTS if manifest.get("serving") == "candidates" else OUTPUTS


def load_item_index(directory: Path, manifest: dict, vocab: Vocab, threads: int | None):
    """The artifact's verified item index, or None when it serves exact top-k."""
    if manifest.get("serving") != "candidates":
        return None
    entry = manifest.get("item_index") or {}
    path = directory / INDEX_FILE
    if not path.is_file():
        raise ModelRefused(f"the manifest serves through an item index but {INDEX_FILE} is missing")
    if sha256_of(path) != entry.get("sha256"):
        raise ModelRefused(f"{INDEX_FILE}: sha256 differs from the manifest's")
    quantiles = manifest.get("surprise_quantiles")
    if not isinstance(quantiles, list) or not quantiles:
        raise ModelRefused("the manifest has no surprise_quantiles for the candidate path")
    try:
        import faiss

        # one thread unless told: the worker's batches are small, and idle OpenMP threads
        # spinning beside onnxruntime's cost more than they give
        faiss.omp_set_num_threads(threads or 1)
        index = read_index(path)
        config = IndexConfig(**entry["config"])
        head = np.asarray(entry["head"], dtype=np.int64)
    except Exception as exc:
        raise ModelRefused(f"unreadable item index: {exc}") from None
    expected = (vocab.n_items - N_RESERVED_ITEMS, int(manifest["network"]["hidden"]))
    if (index.ntotal, index.d) != expected:
        raise ModelRefused(
            f"item index holds {index.ntotal} items of width {index.d}, the model {expected}"
        )
    if len(head) and (head.min() < 0 or head.max() >= index.ntotal):
        raise ModelRefused("item index head refers to items outside the index")
    return ItemIndex(index, head, config)


def served_graph(directory: Path, manifest: dict, precision: str) -> tuple[Path, str]:
    """(the graph to serve, "fp32" or "int8"): the artifact's int8 copy where ``precision`` is
    "auto", the artifact has one and this machine scores on CPU; else the fp32 graph (a GPU
    runs fp32 faster, and it is the graph held to torch within 1e-4)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    entry = manifest.get("int8")
    if precision == "fp32" or entry is None or providers_available()[0] != "CPUExecutionProvider":
        return directory / "model.onnx", "fp32"
    path = directory / INT8_GRAPH
    if not path.is_file():
        raise ModelRefused(f"the manifest offers an int8 graph but {INT8_GRAPH} is missing")
    if sha256_of(path) != entry.get("sha256"):
        raise ModelRefused(f"{INT8_GRAPH}: sha256 differs from the manifest's")
    return path, "int8"


def load_artifact(
    directory: Path, threads: int | None = None, precision: str = "auto"
) -> LoadedModel:
    """Verify and load ``<registry>/<version>/``, serving the graph :func:`served_graph` picks
    for ``precision``; raises :class:`ModelRefused`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelRefused(f"{directory} is not a model directory")
    for path in directory.iterdir():
        if path.suffix not in ARTIFACT_SUFFIXES:
            raise ModelRefused(
                f"{path.name}: not an artifact file; a model directory holds only "
                f"{', '.join(ARTIFACT_SUFFIXES)} files (no external data, no Python objects)"
            )
    model_path, manifest_path, vocab_path = (
        directory / n for n in ("model.onnx", "manifest.json", "vocab.json")
    )
    for path in (model_path, manifest_path, vocab_path):
        if not path.is_file():
            raise ModelRefused(f"missing {path.name}")
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
        vocab = Vocab.load(vocab_path, texts=False)  # scoring never reads them
    except Exception as exc:
        raise ModelRefused(f"unreadable manifest or vocab: {exc}") from None
    actual = sha256_of(model_path)
    if actual != manifest.get("sha256"):
        raise ModelRefused(f"sha256 mismatch: manifest {manifest.get('sha256')}, file {actual}")
    if vocab.hashes() != manifest.get("vocab_hashes"):
        raise ModelRefused("vocab.json does not match the manifest's vocabulary hashes")
    for key, expected in (("inputs", INPUTS), ("outputs", graph_outputs(manifest))):
        declared = {x["name"]: (x["type"], len(x["shape"])) for x in manifest.get(key, [])}
        if declared != expected:
            raise ModelRefused(f"manifest {key} {declared} differ from the contract {expected}")
    graph, served = served_graph(directory, manifest, precision)
    session, provider = checked_session(graph, INPUTS, graph_outputs(manifest), threads)
    loaded = LoadedModel(
        manifest["version"], directory, manifest, vocab, session, provider, precision=served
    )
    loaded.item_index = load_item_index(directory, manifest, vocab, threads)
    try:
        outputs = loaded.run(golden_batch(vocab))
    except Exception as exc:
        raise ModelRefused(f"golden batch failed: {exc}") from None
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ModelRefused(f"golden batch gave non-finite {name}")
    loaded.sentiment = load_sentiment(directory, manifest, threads)
    loaded.text_encoder = load_text_encoder(directory, manifest, threads)
    log.info("model %s loaded on %s (%s)", loaded.version, provider, served)
    return loaded
