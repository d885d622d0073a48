"""Turns event sequences into the model's input tensors (numpy only: trainer and worker share it).

Sequences are left-padded so the most recent event is always the last column; positions count
backwards from it, so one model serves any sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_GAP_BUCKETS = 32


def _buckets(gaps: np.ndarray) -> np.ndarray:
    """Log2 buckets 1..N_GAP_BUCKETS-1 of gaps in seconds (bucket 0 means "no previous event")."""
    return (1 + np.minimum(np.floor(np.log2(1.0 + gaps)), N_GAP_BUCKETS - 2)).astype(np.int64)


def gap_buckets(ts: np.ndarray) -> np.ndarray:
    """Log2 bucket of the seconds since the previous event; 0 for the first event."""
    ts = np.asarray(ts, dtype=np.float64)
    out = np.zeros(ts.shape, dtype=np.int64)
    if ts.size > 1:
        out[1:] = _buckets(np.maximum(np.diff(ts), 0.0))
    return out


def pad_batch(
    items: list[list[int]], types: list[list[int]], ts: list[list[float]], length: int | None = None
) -> dict[str, np.ndarray]:
    """Left-padded int64 inputs ``item_ids``, ``event_types``, ``time_gaps`` of shape [B, T].

    T is the longest sequence (at least 2, so the model always has a "previous" position for
    the surprise of the latest event), or ``length`` when given; longer sequences keep their
    most recent events. Built with one flat fill per array: this runs once per batch on the
    worker's hot path.
    """
    width = max(2, length or max(len(s) for s in items))
    lengths = np.array([min(len(s), width) for s in items], dtype=np.int64)
    rows = np.repeat(np.arange(len(items)), lengths)
    cols = np.concatenate([np.arange(width - n, width) for n in lengths]) if len(items) else rows
    out: dict[str, np.ndarray] = {}
    columns: list[tuple[str, Sequence[Sequence[float]], type]] = [
        ("item_ids", items, np.int64),
        ("event_types", types, np.int64),
        ("ts", ts, np.float64),
    ]
    for name, seqs, dtype in columns:
        flat = [x for s, n in zip(seqs, lengths, strict=True) if n for x in s[-n:]]
        matrix: np.ndarray = np.zeros((len(items), width), dtype=dtype)
        matrix[rows, cols] = flat
        out[name] = matrix
    gaps = np.zeros((len(items), width), dtype=np.int64)
    if width > 1:
        gaps[:, 1:] = _buckets(np.maximum(np.diff(out.pop("ts"), axis=1), 0.0))
    first = width - lengths  # the first real event of each row has no previous event
    gaps[np.arange(width)[None, :] <= first[:, None]] = 0
    return {"item_ids": out["item_ids"], "event_types": out["event_types"], "time_gaps": gaps}
