"""The language-model graphs of an artifact at serve time, without torch.

``sentiment.onnx`` scores texts in [-1, 1]; ``text_encoder.onnx`` embeds catalog items into the
model's item space. Texts are tokenised with the artifact's own ``tokenizer.json`` (the
``tokenizers`` library, the tokenizer the trainer used) and run by onnxruntime. Each graph is
checked on load like the sequence model: the sha256 the manifest records, the operator domains,
the signature, and golden texts that must give finite outputs (sentiment within [-1, 1]);
anything else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.contract import (
    GOLDEN_TEXTS,
    SENTIMENT_INPUTS,
    SENTIMENT_OUTPUTS,
    TEXT_ENCODER_INPUTS,
    TEXT_ENCODER_OUTPUTS,
    sha256_of,
)
from models.onnx_session import ModelRefused, checked_session

TEXT_GROUP = 16
"""Most texts per onnxruntime call."""

PADDING_WASTE = 0.1
"""A group of texts is closed before padding would add more than this share to its tokens:
the worker meets a few texts of mixed lengths per batch, and a graph's cost follows the padded
width: on the bench's reviews, five at a time, padding them all to the longest cost 2.6-2.7 ms a
text, these groups 2.2-2.4."""


def load_tokenizer(path: Path, max_tokens: int):
    """A ``tokenizers`` tokenizer that truncates to ``max_tokens`` and pads on the right."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # a vocabulary token
    return tok


def token_arrays(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 [n, longest], padded on the right: what every text
    graph takes, in training checks and in serving alike."""
    batch = tok.encode_batch(texts)
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    return ids, mask


@dataclass
class TextGraph:
    """One text graph: tokenise, run in length groups, return every output in input order."""

    session: object
    tokenizer: object
    sha256: str

    def run(self, texts: list[str]) -> dict[str, np.ndarray]:
        session = self.session
        names = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
        out: dict[str, np.ndarray] = {}
        if not texts:
            return out
        ids, mask = token_arrays(self.tokenizer, texts)
        lengths = mask.sum(axis=1)
        for rows in length_groups(lengths):
            width = int(lengths[rows[-1]])
            feed = {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width]}
            for name, values in zip(names, session.run(names, feed), strict=True):  # type: ignore[attr-defined]
                if name not in out:
                    out[name] = np.empty((len(texts), *values.shape[1:]), values.dtype)
                out[name][rows] = values
        return out


def length_groups(lengths: np.ndarray) -> list[list[int]]:
    """Rows in groups of similar token length, each sorted shortest first: at most
    ``TEXT_GROUP`` rows, and no more than ``PADDING_WASTE`` of a group's tokens padding."""
    groups: list[list[int]] = []
    group: list[int] = []
    tokens = 0
    for row in sorted(range(len(lengths)), key=lambda i: int(lengths[i])):
        width, wide = int(lengths[row]), len(group) + 1
        if group and (wide > TEXT_GROUP or wide * width > (tokens + width) * (1 + PADDING_WASTE)):
            groups.append(group)
            group, tokens = [], 0
        group.append(row)
        tokens += width
    if group:
        groups.append(group)
    return groups


class SentimentModel(TextGraph):
    """The artifact's sentiment graph."""

    def score(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts)] in [-1, 1], in the order given."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return self.run(texts)["sentiment"]


class TextEncoder(TextGraph):
    """The artifact's text encoder: catalog items' text → vectors in the model's item space."""

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``text`` [n, 384] (whitened embedding) and ``item_vector`` [n, d]."""
        return self.run(texts)


def _load(directory: Path, spec: dict, name: str, inputs: dict, outputs: dict, threads, kind):
    graph, tokenizer_path = directory / name, directory / "tokenizer.json"
    for path in (graph, tokenizer_path):
        if not path.is_file():
            raise ModelRefused(f"the manifest declares {name} but {path.name} is missing")
    if sha256_of(graph) != spec.get("sha256"):
        raise ModelRefused(f"{name} does not match the manifest's sha256")
    if sha256_of(tokenizer_path) != spec.get("tokenizer_sha256"):
        raise ModelRefused("tokenizer.json does not match the manifest's sha256")
    session, _ = checked_session(graph, inputs, outputs, threads)
    try:
        model = kind(
            session, load_tokenizer(tokenizer_path, int(spec["max_tokens"])), spec["sha256"]
        )
        golden = model.run(list(GOLDEN_TEXTS))
    except Exception as exc:
        raise ModelRefused(f"{name}: golden texts failed: {exc}") from None
    if not all(np.isfinite(v).all() for v in golden.values()):
        raise ModelRefused(f"{name}: golden texts gave non-finite outputs")
    return model, golden


def load_sentiment(directory: Path, manifest: dict, threads: int | None) -> SentimentModel | None:
    """The artifact's sentiment model, or None when it was trained without one; raises
    :class:`ModelRefused` when the manifest declares one that is not exactly right."""
    spec = manifest.get("sentiment")
    if not spec:
        return None
    model, golden = _load(
        directory, spec, "sentiment.onnx", SENTIMENT_INPUTS, SENTIMENT_OUTPUTS, threads,
        SentimentModel,
    )  # fmt: skip
    if (np.abs(golden["sentiment"]) > 1.0).any():
        raise ModelRefused("sentiment.onnx: golden texts gave scores outside [-1, 1]")
    return model


def load_text_encoder(directory: Path, manifest: dict, threads: int | None) -> TextEncoder | None:
    """The artifact's text encoder, or None when its items had no text."""
    spec = manifest.get("text_encoder")
    if not spec:
        return None
    model, _ = _load(
        directory, spec, "text_encoder.onnx", TEXT_ENCODER_INPUTS, TEXT_ENCODER_OUTPUTS,
        threads, TextEncoder,
    )  # fmt: skip
    return model
