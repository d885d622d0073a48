"""The garbage collector as the worker runs it: the bench showed its defaults cost the p99."""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def tune_gc() -> None:
    """Measured in the bench: with CPython's default thresholds a full collection ran every
    ~2.5 s and took 60-120 ms, walking every object the libraries made at import as well as
    ours; those pauses set the p99 latency. Freezing what exists once the worker is up takes
    those objects out of every collection (almost all of them live as long as the process), and
    a higher first threshold makes collections rarer; reference counting still frees the rest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
