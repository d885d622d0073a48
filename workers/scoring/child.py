"""The scoring process itself (``python -m workers.scoring.child``): answers load and score
requests from the worker over its stdin/stdout (see workers/scoring/wire.py).

It loads and verifies each model (the same checks as anywhere: sha256, signature, golden batch,
plus the announced sha256 when there is one) and keeps the two newest, so a batch still on the
old version can finish after a swap. It also keeps the catalog items the worker has read (up
to the configured limit) and embeds those each model does not know with that model's text
encoder, so that they can be ranked. It exits when its stdin closes, which is also what happens
when the worker is killed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import IO

import orjson

from models.contract import sha256_of
from models.runtime import ModelRefused
from workers.scoring import wire
from workers.scoring.new_items import apply_catalog_request
from workers.scoring.scorer import OnnxScorer


def update_catalog(catalog: OrderedDict[str, str], scorers, request: dict) -> None:
    """Apply a catalog request to the kept catalog and to every loaded model's new items."""
    put, removed = apply_catalog_request(catalog, request)
    for scorer in scorers:
        scorer.learn_items(put)
        scorer.new_items.remove(removed)  # after: an item put may be evicted at once


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: answer frames until stdin closes."""
    models: OrderedDict[str, OnnxScorer] = OrderedDict()
    catalog: OrderedDict[str, str] = OrderedDict()  # item id -> text, oldest first
    while (payload := wire.read(stdin)) is not None:
        try:
            if payload[:1] == b"L":
                request = orjson.loads(payload[1:])
                directory = Path(request["directory"])
                announced = request.get("sha256")
                # what was announced is checked first: bytes no one vouches for are not parsed
                if announced is not None and sha256_of(directory / "model.onnx") != announced:
                    raise ModelRefused("model.onnx does not match the announced sha256")
                scorer = OnnxScorer.from_directory(
                    directory, request["max_length"], request["threads"], request["precision"]
                )
                scorer.learn_items(list(catalog.items()))
                models[scorer.version] = scorer
                models.move_to_end(scorer.version)
                while len(models) > wire.KEPT_MODELS:
                    models.popitem(last=False)
                reply = b"O" + orjson.dumps(
                    {
                        "version": scorer.version,
                        "precision": scorer.precision,
                        "event_types": scorer.event_types,
                        "item_ids": scorer.item_ids,
                    }
                )
            elif payload[:1] == b"S":
                version, blobs, texts = wire.decode_prefixes(payload)
                scorer = models[version]
                outputs = scorer.run_encoded(blobs, texts)
                reply = wire.encode_outputs(outputs, *scorer.prediction_json(outputs))
            elif payload[:1] == b"C":
                update_catalog(catalog, models.values(), orjson.loads(payload[1:]))
                reply = b"O" + orjson.dumps({"items": len(catalog)})
            else:
                reply = b"E" + f"unknown request {payload[:1]!r}".encode()
        except Exception as exc:  # reported to the worker, which decides what it means
            reply = b"E" + f"{type(exc).__name__}: {exc}".encode()
        wire.write(stdout, reply)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the worker exited while a batch was being scored: nothing to say
        os._exit(0)  # not sys.exit: flushing the broken stdout on the way out would raise again


if __name__ == "__main__":
    main()
