"""The naive baseline for ``foresight bench``: what a reader of a typical Faust + PyTorch
article writes. One agent, JSON table values, and the torch model called once per event,
unbatched, on the event loop. Run as ``python -m workers.tools.naive``; configured like the worker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson
import torch

from models import registry
from models.features import pad_batch
from models.pipeline import load_network
from schemas.kafka_security import faust_credentials
from schemas.settings import Settings


def create_app(settings: Settings) -> faust.App:
    version = registry.current(settings.registry)
    if version is None:
        raise SystemExit(f"no CURRENT model in {settings.registry}")
    net, vocab, manifest = load_network(settings.registry / version)
    torch.set_num_threads(1)
    types = {t: i + 1 for i, t in enumerate(vocab.types)}
    app = faust.App(
        f"{settings.app_id}-naive",
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir / "naive"),
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw"}
    events = app.topic(settings.topic("events"), value_serializer="raw", **raw)
    out = app.topic(settings.topic("predictions") + ".naive", value_serializer="raw", **raw)
    table = app.Table("naive-sequences", default=list)

    @app.agent(events)
    async def score(stream):
        async for key, raw in stream.items():
            event = orjson.loads(raw)
            seq = table[event["user_id"]] + [
                [
                    vocab.item_index(event.get("item_id")),
                    types.get(event["type"], 0),
                    float(event["ts"]),
                ]
            ]
            seq = seq[-manifest["max_sequence_length"] :]
            table[event["user_id"]] = seq
            inputs = pad_batch([[s[0] for s in seq]], [[s[1] for s in seq]], [[s[2] for s in seq]])
            with torch.no_grad():
                logits, _, _ = net(
                    *(torch.from_numpy(inputs[n]) for n in ("item_ids", "event_types", "time_gaps"))
                )
            scores, top = torch.topk(torch.softmax(logits[0, -1], -1), 10)
            await out.send(
                key=key,
                value=orjson.dumps(
                    {
                        "event_id": event["event_id"],
                        "model_version": version,
                        "top_items": top.tolist(),
                        "scores": scores.tolist(),
                        "ts": time.time(),
                    }
                ),
            )

    return app


if __name__ == "__main__":
    from faust.worker import Worker

    logging.basicConfig(level=logging.WARNING)
    Worker(create_app(Settings()), loglevel="warning").execute_from_commandline()
