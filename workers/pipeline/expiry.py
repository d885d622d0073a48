"""Users idle longer than the inactivity limit leave the sequence table.

A table changes only inside the stream of the partition that owns the key, so the sweep (a
timer) only finds idle users and routes each to ``sequences.expire`` under its key; the ingest
agent, which consumes that topic too, then deletes the user if still idle.
"""

from __future__ import annotations

import time

from schemas.settings import Settings
from workers import metrics
from workers.kafka.publisher import Publisher, Record
from workers.pipeline.sequence import UserSequence
from workers.pipeline.sequence_store import SequenceStore


class Expiry:
    """Finds idle users (``sweep``) and deletes them in their partition (``expire``)."""

    def __init__(self, settings: Settings, store: SequenceStore, publisher: Publisher) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher

    def _cutoff(self) -> float:
        return time.time() - self.settings.inactivity_expiry_seconds

    async def sweep(self) -> None:
        """Route every idle user's expiry to the partition that owns it; count the users."""
        cutoff, count = self._cutoff(), 0
        topic = self.settings.topic("sequences.expire")
        for key, value in self.store.items():
            count += 1
            if UserSequence.updated_at_of(value) < cutoff:
                await self.publisher.send(topic, key, b"")
        metrics.USERS.set(count)

    def expire(self, key: bytes, partition: int) -> list[Record]:
        """Delete a user still idle; returns its changelog tombstone, if any, to publish."""
        value = self.store.stored(key)
        if value is None or UserSequence.updated_at_of(value) >= self._cutoff():
            return []
        self.store.delete(key)
        return [Record(key, None, None, partition)]
