"""The runtime under the worker, its event loop and garbage collector, as the bench chose them."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections (CPython's default is 700)."""


def use_event_loop(name: str) -> None:
    """Make ``name`` ("uvloop" or "asyncio") the loop of every event loop made from now on.

    The worker's event loop is the busiest of its cores. With uvloop's loop (libuv, in C)
    Faust's, aiokafka's and our callbacks are scheduled, and their sockets read and written,
    for less of it: in backlog pairs in turns, 3-6% less CPU an event. Its low-load stalls went
    with a fetch stall fixed since, but its half-load p99 was no better, so asyncio's loop is
    the default (docs/benchmark-history.md)."""
    if name == "uvloop":
        import uvloop  # only where it is asked for: the asyncio loop needs no extra package

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif name == "asyncio":
        asyncio.set_event_loop_policy(None)  # Python's default
    else:
        raise ValueError(f"unknown event loop {name!r}: uvloop or asyncio")


def tune_gc() -> None:
    """Measured in the bench: with CPython's default thresholds a full collection ran every
    ~2.5 s and took 60-120 ms, walking every object the libraries made at import as well as
    ours; those pauses set the p99 latency. Freezing what exists once the worker is up takes
    those objects out of every collection (almost all of them live as long as the process), and
    a higher first threshold makes collections rarer; reference counting still frees the rest."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects that exist now out of every collection until the block ends.

    For the paced producer of the bench and ``foresight produce``: it holds every event it
    sends (the latency run's 100,000 are ~300,000 objects), and CPython's full collections
    walked them all, stopping the stream for 80-120 ms every ~3.5 s. The worker then saw a
    burst behind each stop, and the bench counted the burst's queueing as the worker's.
    (Where something froze objects before, as the worker does, they all stay frozen: the
    collector cannot thaw only some.)"""
    frozen_before = gc.get_freeze_count() > 0
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
