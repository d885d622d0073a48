"""Each user's sequence as the worker keeps it: the Faust table's local store, plus a cache of
decoded sequences so the hot path decodes a user's bytes once, not once per event.

The store is written as each event arrives; its changelog records go out with the batch's
predictions (see workers/pipeline/batches.py), so the changelog never runs ahead of what was
scored, and ``persisted`` then tells the store how far the changelog is on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from workers import metrics
from workers.pipeline.sequence import CorruptSequence, UserSequence

log = logging.getLogger(__name__)

DECODE_CACHE_USERS = 50_000
"""Decoded sequences kept (least recently used out): ~2 KB each, so about 100 MB at most."""


class SequenceStore:
    """The user → encoded sequence table (bytes keys and values) and its decode cache."""

    def __init__(self, table: Any, cache_users: int = DECODE_CACHE_USERS) -> None:
        self.table = table
        self.changelog_topic: str = table.changelog_topic.get_topic_name()
        self._cache_users = cache_users
        self._decoded: OrderedDict[bytes, tuple[bytes, UserSequence]] = OrderedDict()

    def load(self, key: bytes) -> UserSequence:
        """The user's sequence: decoded from the store, or reused from the cache when the store
        still holds exactly the bytes decoded last time. A stored value that cannot be read
        (format-1 values corrupted by the one-byte id length bug) starts afresh, loudly:
        refusing that user's events for good would stop them."""
        stored = self.table.data.get(key)
        cached = self._decoded.get(key)
        if cached is not None and stored is not None and cached[0] == stored:
            self._decoded.move_to_end(key)
            return cached[1]
        try:
            return UserSequence.from_bytes(stored)
        except CorruptSequence as exc:
            log.warning("user %r: stored sequence unreadable (%s); starting it afresh", key, exc)
            metrics.SEQUENCE_RESETS.inc()
            return UserSequence()

    def save(self, key: bytes, value: bytes, seq: UserSequence) -> None:
        """Write ``value`` (``seq`` encoded) to the local store only and cache ``seq``."""
        self.table.data[key] = value
        self._decoded[key] = (value, seq)
        self._decoded.move_to_end(key)
        if len(self._decoded) > self._cache_users:
            self._decoded.popitem(last=False)

    def forget(self, key: bytes) -> None:
        """Drop the cached copy (it may be half-changed after a failed update)."""
        self._decoded.pop(key, None)

    def stored(self, key: bytes) -> bytes | None:
        return self.table.data.get(key)

    def delete(self, key: bytes) -> None:
        """Remove the user from the local store (the caller sends the changelog tombstone)."""
        del self.table.data[key]
        self._decoded.pop(key, None)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (user, encoded sequence) of the partitions this worker holds, copied: the
        caller awaits between users, and the table may change meanwhile."""
        return list(self.table.items())

    def persisted(self, future: asyncio.Future) -> None:
        """Done callback of a changelog send: tell the store how far the changelog is on the
        broker, as Faust's own changelog sends do, so RocksDB recovers from there after a
        restart, not from the start. (A batch's first offset: replaying the rest is harmless.)"""
        if not future.cancelled() and future.exception() is None:
            sent = future.result()
            self.table.data.set_persisted_offset(sent.topic_partition, sent.offset)
