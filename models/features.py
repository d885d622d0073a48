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
    most recent events.
    """
    return pad_flat(
        [len(s) for s in items],
        [x for s in items for x in s],
        [x for s in types for x in s],
        [x for s in ts for x in s],
        length,
    )


def pad_flat(
    lengths: Sequence[int],
    items: Sequence[int] | np.ndarray,
    types: Sequence[int] | np.ndarray,
    ts: Sequence[float] | np.ndarray,
    length: int | None = None,
) -> dict[str, np.ndarray]:
    """:func:`pad_batch` for sequences laid end to end: sequence i is the next ``lengths[i]``
    values of ``items``, ``types`` and ``ts``. The scoring process reads a batch into this
    form, and padding it takes a few whole-array steps instead of a loop per sequence (this
    runs once per batch on the hot path)."""
    counts = np.asarray(lengths, dtype=np.int64)
    width = max(2, length or int(counts.max(initial=0)))
    kept = np.minimum(counts, width)
    # each row's kept events: the last ``kept`` of its ``counts``, placed in its last columns
    step = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
    source = np.repeat(np.cumsum(counts) - kept, kept) + step
    rows = np.repeat(np.arange(len(counts)), kept)
    cols = np.repeat(width - kept, kept) + step
    out: dict[str, np.ndarray] = {}
    for name, values, dtype in (
        ("item_ids", items, np.int64),
        ("event_types", types, np.int64),
        ("ts", ts, np.float64),
    ):
        matrix = np.zeros((len(counts), width), dtype=dtype)
        matrix[rows, cols] = np.asarray(values, dtype=dtype)[source]
        out[name] = matrix
    gaps = np.zeros((len(counts), width), dtype=np.int64)
    gaps[:, 1:] = _buckets(np.maximum(np.diff(out.pop("ts"), axis=1), 0.0))
    first = width - kept  # the first real event of each row has no previous event
    gaps[np.arange(width)[None, :] <= first[:, None]] = 0
    return {"item_ids": out["item_ids"], "event_types": out["event_types"], "time_gaps": gaps}
