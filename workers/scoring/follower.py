"""Hot reload: follow ``models.control`` and swap in verified models between batches.

Every worker must see every announcement, so this is a plain consumer outside the consumer
group. The scoring process loads and verifies a candidate (sha256 against the manifest and the
announcement, signature, golden batch); only a model that passes replaces the current one,
with a single reference assignment that the batcher reads once per batch.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

from aiokafka import AIOKafkaConsumer, TopicPartition

from models.runtime import ModelRefused
from schemas.codec import InvalidRecord, decode
from schemas.kafka_security import topic_reader
from schemas.records import ModelAnnouncement
from schemas.settings import Settings
from workers import metrics
from workers.scoring.process import RemoteScorer, ScoringProcess
from workers.scoring.scorer import Scorer

log = logging.getLogger(__name__)


class ModelHolder:
    """The scorer in service; waits until there is one."""

    def __init__(self) -> None:
        self._scorer: Scorer | None = None
        self._ready = asyncio.Event()

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            raise RuntimeError("no model loaded yet")
        return self._scorer

    @property
    def version(self) -> str | None:
        """The version in service, None before the first model."""
        return self._scorer.version if self._scorer else None

    async def wait(self) -> Scorer:
        await self._ready.wait()
        return self.scorer

    def swap(self, scorer: Scorer) -> None:
        previous = self._scorer.version if self._scorer else None
        self._scorer = scorer
        self._ready.set()
        metrics.MODEL.clear()
        metrics.MODEL.labels(scorer.version, scorer.precision).set(1)
        log.info("serving model %s, %s (was %s)", scorer.version, scorer.precision, previous)


def _path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ModelRefused(f"unsupported model URI scheme {parsed.scheme!r}")
    return Path(unquote(parsed.path))


class ModelFollower:
    """Reads the latest announcement at start, then follows new ones."""

    def __init__(self, settings: Settings, holder: ModelHolder, process: ScoringProcess) -> None:
        self.settings = settings
        self.holder = holder
        self.process = process
        self.topic = settings.topic("models.control")
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task | None = None

    async def try_adopt(self, directory: Path, expected_sha: str | None, why: str) -> bool:
        """Verify in the scoring process (off the event loop); swap only on success."""
        s = self.settings
        try:
            info = await self.process.load(
                directory,
                s.max_sequence_length,
                s.scoring_threads,
                sha256=expected_sha,
                precision=s.scoring_precision,
            )
        except (ModelRefused, OSError, ValueError) as exc:
            metrics.MODEL_REFUSED.inc()
            log.error(
                "refused model %s (%s): %s; keeping %s",
                directory,
                why,
                exc,
                self.holder.version or "none",
            )
            return False
        self.holder.swap(RemoteScorer(self.process, info))
        return True

    async def _adopt_record(self, raw: bytes | None) -> bool:
        try:
            record = decode(ModelAnnouncement, raw or b"")
            directory = _path(record.uri)
        except (InvalidRecord, ModelRefused) as exc:
            metrics.MODEL_REFUSED.inc()
            log.error("ignoring bad announcement on %s: %s", self.topic, exc)
            return False
        if self.holder.version == record.version:
            return True
        return await self.try_adopt(directory, record.sha256, f"announced {record.version}")

    async def start(self, fallback: Path | None) -> None:
        self.consumer = topic_reader(self.settings)
        await self.consumer.start()
        tp = TopicPartition(self.topic, 0)
        self.consumer.assign([tp])
        end = (await self.consumer.end_offsets([tp]))[tp]
        adopted = False
        if end > 0:
            self.consumer.seek(tp, end - 1)
            batch = await self.consumer.getmany(tp, timeout_ms=5000)
            for record in batch.get(tp, [])[-1:]:
                adopted = await self._adopt_record(record.value)
        if not adopted and fallback is not None:
            await self.try_adopt(fallback, None, "registry CURRENT")
        self.task = asyncio.get_running_loop().create_task(self._follow(), name="model-follower")

    async def _follow(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                if records:
                    await self._adopt_record(records[-1].value)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        if self.consumer:
            await self.consumer.stop()
