"""The scoring process itself (``python -m workers.scoring.child``): answers load and score
requests from the worker over its stdin/stdout (see workers/scoring/wire.py).

It loads and verifies each model (the same checks as anywhere: sha256, signature, golden batch,
plus the announced sha256 when there is one) and keeps the two newest, so a batch still on the
old version can finish after a swap. It exits when its stdin closes, which is also what happens
when the worker is killed.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import IO

import orjson

from models.runtime import ModelRefused
from workers.pipeline.sequence import UserSequence
from workers.scoring import wire
from workers.scoring.scorer import OnnxScorer


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: answer frames until stdin closes."""
    models: OrderedDict[str, OnnxScorer] = OrderedDict()
    while (payload := wire.read(stdin)) is not None:
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
                while len(models) > wire.KEPT_MODELS:
                    models.popitem(last=False)
                reply = b"O" + orjson.dumps(
                    {
                        "version": scorer.version,
                        "event_types": scorer.event_types,
                        "item_ids": scorer.item_ids,
                    }
                )
            elif payload[:1] == b"S":
                version, blobs, texts = wire.decode_prefixes(payload)
                sequences = [UserSequence.from_bytes(blob).events for blob in blobs]
                reply = wire.encode_outputs(models[version].run(sequences, texts))
            else:
                reply = b"E" + f"unknown request {payload[:1]!r}".encode()
        except Exception as exc:  # reported to the worker, which decides what it means
            reply = b"E" + f"{type(exc).__name__}: {exc}".encode()
        wire.write(stdout, reply)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
