"""Scoring in a child process, so inference never competes with the event loop for the GIL.

Measured on the 2-core box: with onnxruntime in a thread of the worker, the scorer thread and
the event loop handed the GIL back and forth so often that the machine sat 40% idle while both
waited, and one worker topped out near 3,500 events/s; with scoring taken off the loop entirely
the same loop ran 5,300. So the worker sends each batch's prefixes, already in the sequence
table's binary encoding, to this child over a pipe and reads the model's outputs back as raw
arrays.

The protocol is length-prefixed frames on the child's stdin/stdout, plain bytes and JSON:

    b"L" + JSON {"directory", "max_length", "threads", "sha256" (announced, or null)}
        -> b"O" + JSON {"version", "event_types", "item_ids"}  |  b"E" + why it was refused
    b"S" + version + encoded prefixes  ->  b"R" + shape + arrays  |  b"E" + why it failed

The child loads and verifies each model (the same checks as anywhere: sha256, signature, golden
batch, plus the announced sha256 when there is one) and keeps the two newest, so a batch still
on the old version can finish after a swap. It exits when its stdin closes, which is also what
happens when the worker is killed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import IO

import numpy as np
import orjson
from prometheus_client import Histogram

from models.runtime import ModelRefused
from workers import metrics
from workers.scoring import OnnxScorer, Scores, scores_from
from workers.sequence import UserSequence

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<I")
_COUNT = struct.Struct("<I")
_SHAPE = struct.Struct("<III")  # batch, next-action classes, top-k
KEPT_MODELS = 2


class ScoringFailed(RuntimeError):
    """The model raised while scoring a batch (the batch is dead-lettered)."""


def _frame(payload: bytes) -> bytes:
    """A payload with its length in front: what both ends write."""
    return _FRAME.pack(len(payload)) + payload


def _write(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_frame(payload))
    stream.flush()


def _read(stream: IO[bytes]) -> bytes | None:
    """One frame, or None when the other side has closed the pipe."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def encode_prefixes(version: str, prefixes: list[bytes]) -> bytes:
    """A score request: the model version, then each prefix in the table's encoding."""
    name = version.encode()
    parts = [b"S", struct.pack("<H", len(name)), name, _COUNT.pack(len(prefixes))]
    for blob in prefixes:
        parts += (_COUNT.pack(len(blob)), blob)
    return b"".join(parts)


def _decode_prefixes(payload: bytes) -> tuple[str, list[bytes]]:
    (n_name,) = struct.unpack_from("<H", payload, 1)
    offset = 3 + n_name
    version = payload[3:offset].decode()
    (count,) = _COUNT.unpack_from(payload, offset)
    offset += _COUNT.size
    blobs = []
    for _ in range(count):
        (size,) = _COUNT.unpack_from(payload, offset)
        offset += _COUNT.size
        blobs.append(payload[offset : offset + size])
        offset += size
    return version, blobs


def _encode_outputs(outputs: dict[str, np.ndarray]) -> bytes:
    top = np.ascontiguousarray(outputs["top_items"], dtype=np.int64)
    next_action = np.ascontiguousarray(outputs["next_action"], dtype=np.float32)
    return b"".join(
        [
            b"R",
            _SHAPE.pack(*next_action.shape, top.shape[1]),
            next_action.tobytes(),
            top.tobytes(),
            *(
                np.ascontiguousarray(outputs[name], dtype=np.float32).tobytes()
                for name in ("top_scores", "risk", "surprise")
            ),
        ]
    )


def _decode_outputs(payload: bytes) -> dict[str, np.ndarray]:
    batch, classes, k = _SHAPE.unpack_from(payload, 1)
    offset = 1 + _SHAPE.size

    def take(dtype, *shape: int) -> np.ndarray:
        nonlocal offset
        array = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=offset)
        offset += array.nbytes
        return array.reshape(shape)

    return {
        "next_action": take(np.float32, batch, classes),
        "top_items": take(np.int64, batch, k),
        "top_scores": take(np.float32, batch, k),
        "risk": take(np.float32, batch),
        "surprise": take(np.float32, batch),
    }


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: answer frames until stdin closes."""
    models: OrderedDict[str, OnnxScorer] = OrderedDict()
    while (payload := _read(stdin)) is not None:
        try:
            if payload[:1] == b"L":
                request = orjson.loads(payload[1:])
                scorer = OnnxScorer.from_directory(
                    Path(request["directory"]), request["max_length"], request["threads"]
                )
                announced = request.get("sha256")
                if announced is not None and scorer.loaded.manifest["sha256"] != announced:
                    # the file matched the manifest, so it is the file that differs
                    raise ModelRefused("model.onnx does not match the announced sha256")
                models[scorer.version] = scorer
                models.move_to_end(scorer.version)
                while len(models) > KEPT_MODELS:
                    models.popitem(last=False)
                reply = b"O" + orjson.dumps(
                    {
                        "version": scorer.version,
                        "event_types": scorer.event_types,
                        "item_ids": scorer.item_ids,
                    }
                )
            elif payload[:1] == b"S":
                version, blobs = _decode_prefixes(payload)
                sequences = [UserSequence.from_bytes(blob).events for blob in blobs]
                reply = _encode_outputs(models[version].run(sequences))
            else:
                reply = b"E" + f"unknown request {payload[:1]!r}".encode()
        except Exception as exc:  # reported to the worker, which decides what it means
            reply = b"E" + f"{type(exc).__name__}: {exc}".encode()
        _write(stdout, reply)


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
        self._interrupted = False  # an exchange was cancelled between request and reply

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.scoring_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def stop(self) -> None:
        """Close the child's stdin (it exits on that) and read what it still had to say, so
        its pipes close too; kill it if it takes longer than 10 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
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

    async def _exchange(self, payload: bytes) -> bytes | None:
        """One request and its reply; None when the child is gone."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("scoring process not started")
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(_frame(payload))
            await proc.stdin.drain()
            (size,) = _FRAME.unpack(await proc.stdout.readexactly(_FRAME.size))
            return await proc.stdout.readexactly(size)
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        except asyncio.CancelledError:
            self._interrupted = True
            raise

    def _exit_code(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def load(
        self, directory: Path, max_length: int, threads: int | None, sha256: str | None = None
    ) -> dict:
        """Load and verify a model in the child (against ``sha256`` too, if announced);
        returns its version, event types and item ids, or raises ModelRefused with the
        child's reason."""
        request = b"L" + orjson.dumps(
            {
                "directory": str(directory),
                "max_length": max_length,
                "threads": threads,
                "sha256": sha256,
            }
        )
        reply = await self._ask(request)
        if reply[:1] != b"O":
            raise ModelRefused(reply[1:].decode())
        info = orjson.loads(reply[1:])
        self._loaded[info["version"]] = request
        while len(self._loaded) > KEPT_MODELS:
            self._loaded.popitem(last=False)
        return info

    async def score(self, version: str, prefixes: list[bytes]) -> dict[str, np.ndarray]:
        """The model's raw outputs for ``prefixes``; raises ScoringFailed if it raised."""
        reply = await self._ask(encode_prefixes(version, prefixes), metrics.INFERENCE)
        if reply[:1] != b"R":
            raise ScoringFailed(reply[1:].decode())
        return _decode_outputs(reply)


class RemoteScorer:
    """A model as served by the scoring process (what the worker's holder holds)."""

    def __init__(self, process: ScoringProcess, info: dict) -> None:
        self.process = process
        self.version: str = info["version"]
        self.event_types: tuple[str, ...] = tuple(info["event_types"])
        self.item_ids: tuple[str, ...] = tuple(info["item_ids"])

    async def score(self, prefixes: list[bytes]) -> Scores:
        return scores_from(await self.process.score(self.version, prefixes), self.item_ids)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
