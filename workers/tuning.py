"""Process-wide settings of the worker that the bench showed to matter."""

from __future__ import annotations

import gc
import logging

from workers.kafka.log_limits import limit_repeats

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections (CPython's default is 700)."""
QUIET_LOGGERS = ("aiokafka", "faust.transport")
"""Libraries whose debug records cost ~3% of the hot path even when nobody reads them."""


def quiet_libraries() -> None:
    """Raise the noisy libraries' loggers to INFO at least, and log a repeating aiokafka
    message once per 10 s (with the count held back) instead of in a tight loop."""
    for name in QUIET_LOGGERS:
        if logging.getLogger(name).getEffectiveLevel() < logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    limit_repeats()


def tune_gc() -> None:
    """Measured in the bench: with CPython's default thresholds a full collection ran every
    ~2.5 s and took 60-120 ms, walking every object the libraries made at import as well as
    ours; those pauses set the p99 latency. Freezing what exists once the worker is up takes
    those objects out of every collection (almost all of them live as long as the process), and
    a higher first threshold makes collections rarer; reference counting still frees the rest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
