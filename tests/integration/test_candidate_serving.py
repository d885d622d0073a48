"""A worker hot-reloads from an exact artifact to one served through an item index, and its
predictions keep their shape and meaning (real broker, real model files)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from models import registry
from models.item_index import IndexConfig
from models.runtime import load_artifact
from schemas.codec import encode
from schemas.settings import Settings
from tests.support.helpers import synthetic_history, tiny_config
from tests.support.worker_harness import TopicReader, WorkerProcess, keyed, produce, valid_events
from workers.kafka.topics import create_topics


async def test_worker_switches_to_the_candidate_path(served: Settings, tmp_path: Path) -> None:
    from models.pipeline import train_and_register

    s = served
    await create_topics(s)
    old = registry.current(s.registry)
    config = tiny_config(serving="candidates", index=IndexConfig(head=8, sample=16))
    new, _ = train_and_register(synthetic_history(), s.registry, config, cold_start_share=None)
    vocab = load_artifact(s.registry / new).vocab
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await produce(s, s.topic("events"), keyed(valid_events(100, 10, prefix="a")))
            await preds.until(lambda r: len(r) >= 100, 60, [worker])
            announcement = registry.announcement(s.registry, new)
            await produce(s, s.topic("models.control"), [(b"current", encode(announcement))])
            began, k = asyncio.get_running_loop().time(), 0
            while new not in {orjson.loads(r.value)["model_version"] for r in preds.records}:
                assert asyncio.get_running_loop().time() - began < 20, "candidate model not adopted"
                await produce(s, s.topic("events"), keyed(valid_events(20, 5, prefix=f"c{k}")))
                k += 1
                await preds.poll()
            await produce(s, s.topic("events"), keyed(valid_events(100, 10, prefix="d")))
            await preds.until(
                lambda r: sum(orjson.loads(x.value)["event_id"].startswith("d") for x in r) >= 100,
                60,
                [worker],
            )
    finally:
        worker.stop()
    predictions = [orjson.loads(r.value) for r in preds.records]
    assert {p["model_version"] for p in predictions} == {old, new}
    served_by_index = [p for p in predictions if p["model_version"] == new]
    assert len(served_by_index) >= 100
    for p in served_by_index:
        items = [x["item_id"] for x in p["top_items"]]
        scores = [x["score"] for x in p["top_items"]]
        assert len(items) == config.network.top_k and len(set(items)) == len(items)
        assert set(items) <= set(vocab.items), "a reserved slot or unknown item was recommended"
        assert scores == sorted(scores, reverse=True) and 0 < scores[-1] and scores[0] <= 1
        assert 0.0 <= p["surprise"] <= 1.0
    assert "refused model" not in worker.tail(20_000)
