"""New items at serve time, against the real broker: an item published to ``catalog`` after the
model was trained is ranked in a user's ``top_items`` with exactly the score the model's text
path gives it offline, and a restarted worker still ranks it (rebuilt from the compacted topic).

The model's top-k covers the whole toy catalog (twelve items), so the new item is ranked unless
it scores below every one of them. Whether it also beats the other topics' trained items in a
top 5, as this test once asked, is the toy model's margin: twelve titles are too few for its
text projection to generalise, and that margin flipped with the CPU's floating point (passed
on one VM, failed on the next). What this test is about is the catalog path itself, so it is
pinned to the offline computation instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson

from models import registry
from models.pipeline import train_and_register
from models.vocab import Vocab
from schemas.records import CatalogItem, Event
from schemas.settings import Settings
from tests.support.helpers import tiny_config, topical_history
from tests.support.worker_harness import TopicReader, WorkerProcess, keyed, produce
from workers.catalog import publish_catalog
from workers.kafka.topics import create_topics
from workers.pipeline.sequence import seq_event
from workers.scoring.scorer import OnnxScorer, scores_from

NEW = CatalogItem(item_id="jazz-new", title="jazz piano and saxophone album", category="music")
TOP_K = 12  # every trained item: the new one is ranked unless it scores below all twelve


def _jazz_events(start: int, n: int) -> list[dict]:
    """A jazz listener's events on the trained jazz items."""
    return [
        {
            "event_id": f"j{start + i}",
            "user_id": "listener",
            "type": "view",
            "ts": 1_700_100_000 + 60 * (start + i),
            "item_id": f"jazz-{(start + i) % 3}",
        }
        for i in range(n)
    ]


def _recommended(records: list) -> list[list[str]]:
    return [[t["item_id"] for t in orjson.loads(r.value)["top_items"]] for r in records]


def _offline_top_items(model: Path, events: list[dict], max_len: int) -> dict[str, float]:
    """The top items, with scores, that the model and its text encoder give ``events`` with
    the new item known: the trainer's cold-start text path, run outside the worker."""
    scorer = OnnxScorer.from_directory(model, max_len)
    assert scorer.learn_items([(NEW.item_id, NEW.text())]) == 1
    scores = scores_from(
        scorer.run([[seq_event(Event.model_validate(e)) for e in events]]), scorer.item_ids
    )
    return dict(zip(scores.top_items[0], scores.top_scores[0].tolist(), strict=True))


def _assert_ranked_as_offline(record, model: Path, max_len: int) -> None:
    """``record`` (a prediction for the listener's event ``j<n>``) ranks the new item, and its
    top items and scores are the offline ones for the listener's events up to that one."""
    served = {t["item_id"]: t["score"] for t in orjson.loads(record.value)["top_items"]}
    n = int(_event_id(record)[1:])
    expected = _offline_top_items(model, _jazz_events(0, n + 1), max_len)
    assert NEW.item_id in served, served
    assert served.keys() == expected.keys()
    assert np.allclose([served[i] for i in expected], list(expected.values()), atol=1e-5), (
        served,
        expected,
    )


async def test_a_published_item_is_ranked_and_survives_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings
    version, _ = train_and_register(
        topical_history(users=200),
        s.registry,
        tiny_config(top_k=TOP_K, epochs=30, hidden=32, patience=50, seed=1),
        cold_start_share=None,
    )
    registry.mark_current(s.registry, version)
    manifest = orjson.loads((s.registry / version / "manifest.json").read_bytes())
    assert "text_encoder" in manifest
    assert NEW.item_id not in Vocab.load(s.registry / version / "vocab.json").items
    await create_topics(s)

    model = s.registry / version
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await produce(s, s.topic("events"), keyed(_jazz_events(0, 3)))
            await preds.until(lambda r: len(r) >= 3, 90, [worker])
            assert not any(NEW.item_id in row for row in _recommended(preds.records))
            await publish_catalog(s, [NEW])  # after training, while the worker runs
            sent = 3
            while not any(NEW.item_id in row for row in _recommended(preds.records[3:])):
                assert sent < 30, f"never ranked: {_recommended(preds.records)[-3:]}"
                await produce(s, s.topic("events"), keyed(_jazz_events(sent, 1)))
                sent += 1
                await preds.until(lambda r, n=sent: len(r) >= n, 30, [worker])
                await asyncio.sleep(0.5)
        first = next(r for r in preds.records[3:] if NEW.item_id in _recommended([r])[0])
        _assert_ranked_as_offline(first, model, s.max_sequence_length)
    finally:
        worker.stop()

    restarted = WorkerProcess(s, tmp_path / "restarted.log").start()
    last = f"j{sent}"
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await produce(s, s.topic("events"), keyed(_jazz_events(sent, 1)))
            await preds.until(lambda r: any(_event_id(x) == last for x in r), 90, [restarted])
    finally:
        restarted.stop()
    after = next(x for x in preds.records if _event_id(x) == last)
    _assert_ranked_as_offline(after, model, s.max_sequence_length)


def _event_id(record) -> str:
    return orjson.loads(record.value)["event_id"]
