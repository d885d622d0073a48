"""The worker's side of the scoring process: inference never competes with the event loop
for the GIL.

Measured on the 2-core box: with onnxruntime in a thread of the worker, the scorer thread and
the event loop handed the GIL back and forth so often that the machine sat 40% idle while both
waited, and one worker topped out near 3,500 events/s; with scoring taken off the loop entirely
the same loop ran 5,300. So the worker sends each batch's prefixes, already in the sequence
table's binary encoding, to a child (workers/scoring/child.py) over a pipe and reads the
model's outputs back as raw arrays (workers/scoring/wire.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import Histogram

from models.runtime import ModelRefused
from workers import metrics
from workers.scoring import wire
from workers.scoring.new_items import apply_catalog_request
from workers.scoring.scorer import Scores, scores_from

log = logging.getLogger(__name__)


CATALOG_CHUNK = 64
"""Catalog items per request to the child: embedding one takes ~3-15 ms, so a chunk holds the
scoring of batches back by well under a second."""


class ScoringFailed(RuntimeError):
    """The model raised while scoring a batch (the batch is dead-lettered)."""


class ScoringProcess:
    """The worker's handle on the child: one request at a time, restarted if it dies.

    The pipes are asyncio streams, so the event loop writes a batch and goes on consuming
    until the answer arrives. (Waiting for it in a thread instead cost ~15 ms per batch: the
    thread had to win the GIL back from the busy loop at each step of the exchange.)
    """

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._loaded: OrderedDict[str, bytes] = OrderedDict()  # version -> its load request
        self._catalog: OrderedDict[str, str] = OrderedDict()  # what the child holds, to replay
        self._catalog_limit = 0
        self._interrupted = False  # an exchange was cancelled between request and reply

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.scoring.child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def stop(self) -> None:
        """Close the child's stdin (it exits on that) and read what it still had to say, so
        its pipes close too; kill it if it takes longer than 10 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:  # communicate() without input leaves stdin open (3.11)
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            await proc.communicate()

    async def _ask(self, payload: bytes, timer: Histogram | None = None) -> bytes:
        """Send one request and read its reply; a dead child is restarted (with the models it
        had) and asked once more. ``timer`` observes the exchange, not the wait for a turn."""
        async with self._lock:
            if self._interrupted:  # its reply is still coming and would be read as this one's
                await self._restart()
            began = time.perf_counter()
            reply = await self._exchange(payload)
            if reply is None:
                log.error("scoring process exited (%s); restarting it", self._exit_code())
                await self._restart()
                reply = await self._exchange(payload)
            if reply is None:
                raise RuntimeError("scoring process exited again after a restart")
            if timer is not None:
                timer.observe(time.perf_counter() - began)
            return reply

    async def _restart(self) -> None:
        """A fresh child with the models the last one had."""
        await self.stop()
        await self.start()
        self._interrupted = False
        for request in self._loaded.values():
            await self._exchange(request)
        items = list(self._catalog.items())
        for start in range(0, len(items), CATALOG_CHUNK):
            chunk = {"put": items[start : start + CATALOG_CHUNK], "limit": self._catalog_limit}
            await self._exchange(b"C" + orjson.dumps(chunk))

    async def _exchange(self, payload: bytes) -> bytes | None:
        """One request and its reply; None when the child is gone."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("scoring process not started")
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(wire.frame(payload))
            await proc.stdin.drain()
            (size,) = wire.FRAME.unpack(await proc.stdout.readexactly(wire.FRAME.size))
            return await proc.stdout.readexactly(size)
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        except asyncio.CancelledError:
            self._interrupted = True
            raise

    def pid(self) -> int | None:
        """The child's pid while it runs (the stall watchdog kills it before exiting)."""
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    def _exit_code(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def load(
        self,
        directory: Path,
        max_length: int,
        threads: int | None,
        sha256: str | None = None,
        precision: str = "auto",
    ) -> dict:
        """Load and verify a model in the child (against ``sha256`` too, if announced), its
        graph chosen by ``precision`` (models/runtime.py); returns its version, the graph's
        precision, event types and item ids, or raises ModelRefused with the child's reason."""
        request = b"L" + orjson.dumps(
            {
                "directory": str(directory),
                "max_length": max_length,
                "threads": threads,
                "sha256": sha256,
                "precision": precision,
            }
        )
        reply = await self._ask(request)
        if reply[:1] != b"O":
            raise ModelRefused(reply[1:].decode())
        info = orjson.loads(reply[1:])
        self._loaded[info["version"]] = request
        while len(self._loaded) > wire.KEPT_MODELS:
            self._loaded.popitem(last=False)
        return info

    async def update_catalog(
        self, put: list[tuple[str, str]], remove: list[str], limit: int
    ) -> int:
        """Give the child catalog items to rank (and ids to forget), ``CATALOG_CHUNK`` at a
        time so that batches are scored in between; returns how many items it keeps."""
        kept = len(self._catalog)
        for start in range(0, max(len(put), 1), CATALOG_CHUNK):
            request = {
                "put": put[start : start + CATALOG_CHUNK],
                "remove": remove if start == 0 else [],
                "limit": limit,
            }
            reply = await self._ask(b"C" + orjson.dumps(request))
            if reply[:1] != b"O":
                raise RuntimeError(f"the scoring process refused catalog items: {reply[1:]!r}")
            kept = orjson.loads(reply[1:])["items"]
            apply_catalog_request(self._catalog, request)  # the same state as the child's
        self._catalog_limit = limit
        return kept

    async def score(
        self, version: str, prefixes: list[bytes], texts: list[str | None]
    ) -> dict[str, np.ndarray]:
        """The model's raw outputs for ``prefixes`` (and the sentiment of ``texts``); raises
        ScoringFailed if it raised."""
        request = wire.encode_prefixes(version, prefixes, texts)
        reply = await self._ask(request, metrics.INFERENCE)
        if reply[:1] != b"R":
            raise ScoringFailed(reply[1:].decode())
        return wire.decode_outputs(reply)


class RemoteScorer:
    """A model as served by the scoring process (what the worker's holder holds)."""

    def __init__(self, process: ScoringProcess, info: dict) -> None:
        self.process = process
        self.version: str = info["version"]
        self.precision: str = info["precision"]
        self.event_types: tuple[str, ...] = tuple(info["event_types"])
        self.item_ids = np.array(info["item_ids"], dtype=object)  # see scores_from

    async def score(self, prefixes: list[bytes], texts: list[str | None]) -> Scores:
        outputs = await self.process.score(self.version, prefixes, texts)
        return scores_from(outputs, self.item_ids)
