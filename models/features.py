"""Turns event sequences into the model's input tensors (numpy only: trainer and worker share it).

Sequences are left-padded so the most recent event is always the last column; positions count
backwards from it, so one model serves any sequence length.
"""

from __future__ import annotations

import numpy as np

N_GAP_BUCKETS = 32


def gap_buckets(ts: np.ndarray) -> np.ndarray:
    """Log2 bucket of the seconds since the previous event; 0 for the first event."""
    ts = np.asarray(ts, dtype=np.float64)
    out = np.zeros(ts.shape, dtype=np.int64)
    if ts.size > 1:
        gaps = np.maximum(np.diff(ts), 0.0)
        out[1:] = 1 + np.minimum(np.floor(np.log2(1.0 + gaps)), N_GAP_BUCKETS - 2).astype(np.int64)
    return out


def pad_batch(
    items: list[list[int]], types: list[list[int]], ts: list[list[float]], length: int | None = None
) -> dict[str, np.ndarray]:
    """Left-padded int64 inputs ``item_ids``, ``event_types``, ``time_gaps`` of shape [B, T].

    T is the longest sequence (at least 2, so the model always has a "previous" position for
    the surprise of the latest event), or ``length`` when given; longer sequences keep their
    most recent events.
    """
    width = max(2, length or max(len(s) for s in items))
    out = {
        name: np.zeros((len(items), width), dtype=np.int64)
        for name in ("item_ids", "event_types", "time_gaps")
    }
    for row, (it, ty, t) in enumerate(zip(items, types, ts, strict=True)):
        it, ty, t = it[-width:], ty[-width:], t[-width:]
        n = len(it)
        if n == 0:
            continue
        out["item_ids"][row, width - n :] = it
        out["event_types"][row, width - n :] = ty
        out["time_gaps"][row, width - n :] = gap_buckets(np.asarray(t))
    return out
