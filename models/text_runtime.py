"""The language-model graphs of an artifact at serve time, without torch.

Texts are tokenised with the artifact's own ``tokenizer.json`` (the ``tokenizers`` library,
the tokenizer the trainer used) and scored by onnxruntime. Each graph is checked on load like
the sequence model: the sha256 the manifest records, the operator domains, the signature, and
golden texts that must give finite scores in range; anything else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.contract import GOLDEN_TEXTS, SENTIMENT_INPUTS, SENTIMENT_OUTPUTS, sha256_of
from models.onnx_session import ModelRefused, check_graph, session_for, signature

TEXT_GROUP = 16
"""Texts per onnxruntime call, grouped by length so that short texts are not padded far."""


def load_tokenizer(path: Path, max_tokens: int):
    """A ``tokenizers`` tokenizer that truncates to ``max_tokens`` and pads on the right."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # a vocabulary token
    return tok


@dataclass
class SentimentModel:
    """The artifact's sentiment graph: one score in [-1, 1] per text."""

    session: object
    tokenizer: object
    sha256: str

    def score(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts)], in the order given."""
        out = np.empty(len(texts), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), TEXT_GROUP):
            rows = order[start : start + TEXT_GROUP]
            batch = self.tokenizer.encode_batch([texts[i] for i in rows])  # type: ignore[attr-defined]
            feed = {
                "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            }
            out[rows] = self.session.run(list(SENTIMENT_OUTPUTS), feed)[0]  # type: ignore[attr-defined]
        return out


def load_sentiment(directory: Path, manifest: dict, threads: int | None) -> SentimentModel | None:
    """The artifact's sentiment model, or None when it was trained without one; raises
    :class:`ModelRefused` when the manifest declares one that is not exactly right."""
    spec = manifest.get("sentiment")
    if not spec:
        return None
    graph, tokenizer_path = directory / "sentiment.onnx", directory / "tokenizer.json"
    for path in (graph, tokenizer_path):
        if not path.is_file():
            raise ModelRefused(
                f"the manifest declares a sentiment model but {path.name} is missing"
            )
    if sha256_of(graph) != spec.get("sha256"):
        raise ModelRefused("sentiment.onnx does not match the manifest's sha256")
    if sha256_of(tokenizer_path) != spec.get("tokenizer_sha256"):
        raise ModelRefused("tokenizer.json does not match the manifest's sha256")
    check_graph(graph)
    session, _ = session_for(graph, threads)
    got_in, got_out = signature(session.get_inputs()), signature(session.get_outputs())
    if got_in != SENTIMENT_INPUTS or got_out != SENTIMENT_OUTPUTS:
        raise ModelRefused(f"sentiment signature mismatch: inputs {got_in}, outputs {got_out}")
    try:
        model = SentimentModel(
            session, load_tokenizer(tokenizer_path, int(spec["max_tokens"])), spec["sha256"]
        )
        golden = model.score(list(GOLDEN_TEXTS))
    except Exception as exc:
        raise ModelRefused(f"sentiment golden texts failed: {exc}") from None
    if not (np.isfinite(golden).all() and (np.abs(golden) <= 1.0).all()):
        raise ModelRefused("sentiment golden texts gave scores outside [-1, 1]")
    return model
