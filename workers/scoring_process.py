"""Scoring in a child process, so inference never competes with the event loop for the GIL.

Measured on the 2-core box: with onnxruntime in a thread of the worker, the scorer thread and
the event loop handed the GIL back and forth so often that the machine sat 40% idle while both
waited, and one worker topped out near 3,500 events/s; with scoring taken off the loop entirely
the same loop ran 5,300. So the worker sends each batch's prefixes, already in the sequence
table's binary encoding, to this child over a pipe and reads the outputs back as raw arrays.

The protocol is length-prefixed frames on the child's stdin/stdout (no pickle):

    b"L" + JSON {"directory", "max_length", "threads"}   ->  b"O" + JSON {"version"} | b"E" + why
    b"S" + version + encoded prefixes                    ->  b"R" + header + arrays  | b"E" + why

The child keeps the two newest models, so a batch still on the old version can finish after a
swap. It exits when its stdin closes, which is also what happens when the worker is killed.
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from models.runtime import ModelRefused
from workers.scoring import OnnxScorer, Scores
from workers.sequence import UserSequence

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<I")
_COUNT = struct.Struct("<I")
_SHAPE = struct.Struct("<III")  # batch, next-action classes, top-k
KEPT_MODELS = 2


class ScoringFailed(RuntimeError):
    """The model raised while scoring a batch (the batch is dead-lettered)."""


def _write(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)) + payload)
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


def _encode_scores(scores: Scores, item_index: dict[str, int]) -> bytes:
    top = np.array([[item_index[i] for i in row] for row in scores.top_items], dtype=np.int64)
    next_action = np.ascontiguousarray(scores.next_action, dtype=np.float32)
    batch, classes = next_action.shape
    return b"".join(
        [
            b"R",
            _SHAPE.pack(batch, classes, top.shape[1] if top.ndim == 2 else 0),
            next_action.tobytes(),
            top.tobytes(),
            np.ascontiguousarray(scores.top_scores, dtype=np.float32).tobytes(),
            np.ascontiguousarray(scores.risk, dtype=np.float32).tobytes(),
            np.ascontiguousarray(scores.surprise, dtype=np.float32).tobytes(),
        ]
    )


def decode_scores(payload: bytes, item_ids: tuple[str, ...]) -> Scores:
    batch, classes, k = _SHAPE.unpack_from(payload, 1)
    offset = 1 + _SHAPE.size

    def take(dtype, count: int) -> np.ndarray:
        nonlocal offset
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
        offset += array.nbytes
        return array

    next_action = take(np.float32, batch * classes).reshape(batch, classes)
    top = take(np.int64, batch * k).reshape(batch, k)
    top_scores = take(np.float32, batch * k).reshape(batch, k)
    risk, surprise = take(np.float32, batch), take(np.float32, batch)
    return Scores(
        next_action=next_action,
        top_items=[[item_ids[i] for i in row] for row in top.tolist()],
        top_scores=top_scores,
        risk=risk,
        surprise=surprise,
    )


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: answer frames until stdin closes."""
    models: OrderedDict[str, tuple[OnnxScorer, dict[str, int]]] = OrderedDict()
    while (payload := _read(stdin)) is not None:
        try:
            if payload[:1] == b"L":
                request = orjson.loads(payload[1:])
                scorer = OnnxScorer.from_directory(
                    Path(request["directory"]), request["max_length"], request["threads"]
                )
                ids = scorer.item_ids
                models[scorer.version] = (scorer, {item: i for i, item in enumerate(ids)})
                models.move_to_end(scorer.version)
                while len(models) > KEPT_MODELS:
                    models.popitem(last=False)
                reply = b"O" + orjson.dumps({"version": scorer.version})
            elif payload[:1] == b"S":
                version, blobs = _decode_prefixes(payload)
                scorer, index = models[version]
                sequences = [UserSequence.from_bytes(blob).events for blob in blobs]
                reply = _encode_scores(scorer.score(sequences), index)
            else:
                reply = b"E" + f"unknown request {payload[:1]!r}".encode()
        except Exception as exc:  # reported to the worker, which decides what it means
            reply = b"E" + f"{type(exc).__name__}: {exc}".encode()
        _write(stdout, reply)


class ScoringProcess:
    """The worker's handle on the child: one request at a time, restarted if it dies."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, bytes] = OrderedDict()  # version -> its load request

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "workers.scoring_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _ask(self, payload: bytes) -> bytes:
        """Send one request and read its reply; a dead child is restarted (with the models it
        had) and asked once more."""
        with self._lock:
            for _attempt in (1, 2):
                proc = self._proc
                if proc is None:
                    raise RuntimeError("scoring process not started")
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    _write(proc.stdin, payload)
                    reply = _read(proc.stdout)
                except (BrokenPipeError, ValueError):
                    reply = None
                if reply is not None:
                    return reply
                log.error("scoring process exited (%s); restarting it", proc.poll())
                self.stop()
                self.start()
                for request in self._loaded.values():
                    if self._request(request)[:1] != b"O":
                        break
            raise RuntimeError("scoring process keeps exiting")

    def _request(self, payload: bytes) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        _write(proc.stdin, payload)
        return _read(proc.stdout) or b"E" + b"scoring process exited"

    def load(self, directory: Path, max_length: int, threads: int | None) -> str:
        """Load a model in the child (which verifies it again); returns its version."""
        request = b"L" + orjson.dumps(
            {"directory": str(directory), "max_length": max_length, "threads": threads}
        )
        reply = self._ask(request)
        if reply[:1] != b"O":
            raise ModelRefused(f"scoring process refused it: {reply[1:].decode()}")
        version = orjson.loads(reply[1:])["version"]
        with self._lock:
            self._loaded[version] = request
            self._loaded.move_to_end(version)
            while len(self._loaded) > KEPT_MODELS:
                self._loaded.popitem(last=False)
        return version

    def score(self, version: str, prefixes: list[bytes], item_ids: tuple[str, ...]) -> Scores:
        reply = self._ask(encode_prefixes(version, prefixes))
        if reply[:1] != b"R":
            raise ScoringFailed(reply[1:].decode())
        return decode_scores(reply, item_ids)


class RemoteScorer:
    """A verified model as served by the scoring process (what the worker's holder holds)."""

    def __init__(self, process: ScoringProcess, local: OnnxScorer) -> None:
        self.process = process
        self.version = local.version
        self.event_types = local.event_types
        self.item_ids = local.item_ids

    def score(self, prefixes: list[bytes]) -> Scores:
        return self.process.score(self.version, prefixes, self.item_ids)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
