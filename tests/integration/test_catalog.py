"""New items at serve time, against the real broker: an item published to ``catalog`` after the
model was trained is ranked for a user whose recent items are its close neighbours in text,
with exactly the score the model's text path gives it offline, and a restarted worker still
ranks it (rebuilt from the compacted topic).

The toy catalog has four topics of 24 titles each, every title an adjective, a product and a
use of its topic (``worded_topics``); the new jazz title is one the catalog left out, and a new
garden title published with it is the control. For a listener of the trained jazz items the
new jazz item must make the top 28 (in training runs with seeds 0-4 it came right after the 24
jazz items, ahead of all 72 items of the other topics, by at least 1.3x their best score) and
the new garden item must not (it ranked 35th to 69th). With a few hand-written titles a topic,
as this test had before, new titles came out in no topical order: too few for the text path
to generalise.
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
from tests.support.helpers import tiny_config, topical_history, worded_topics
from tests.support.worker_harness import TopicReader, WorkerProcess, keyed, produce
from workers.catalog import publish_catalog
from workers.kafka.topics import create_topics
from workers.pipeline.sequence import seq_event
from workers.scoring.scorer import OnnxScorer, scores_from

TOPICS, LEFT_OUT = worded_topics()
NEW = CatalogItem(item_id="jazz-new", title=LEFT_OUT["jazz"])
CONTROL = CatalogItem(item_id="garden-new", title=LEFT_OUT["garden"])
TOP_K = 28  # of 96 trained items: the 24 jazz ones and four more


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
    assert scorer.learn_items([(i.item_id, i.text()) for i in (NEW, CONTROL)]) == 2
    scores = scores_from(
        scorer.run([[seq_event(Event.model_validate(e)) for e in events]]), scorer.item_ids
    )
    return dict(zip(scores.top_items[0], scores.top_scores[0].tolist(), strict=True))


def _assert_ranked_as_offline(record, model: Path, max_len: int) -> None:
    """``record`` (a prediction for the listener's event ``j<n>``) ranks the new jazz item and
    not the new garden one, and its top items and scores are the offline ones for the
    listener's events up to that one."""
    served = {t["item_id"]: t["score"] for t in orjson.loads(record.value)["top_items"]}
    n = int(_event_id(record)[1:])
    expected = _offline_top_items(model, _jazz_events(0, n + 1), max_len)
    assert NEW.item_id in served and CONTROL.item_id not in served, served
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
        topical_history(TOPICS, users=200),
        s.registry,
        tiny_config(top_k=TOP_K, epochs=30, hidden=32, patience=50, seed=1),
        cold_start_share=None,
    )
    registry.mark_current(s.registry, version)
    manifest = orjson.loads((s.registry / version / "manifest.json").read_bytes())
    assert "text_encoder" in manifest
    trained = Vocab.load(s.registry / version / "vocab.json").items
    assert NEW.item_id not in trained and CONTROL.item_id not in trained
    await create_topics(s)

    model = s.registry / version
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await produce(s, s.topic("events"), keyed(_jazz_events(0, 3)))
            await preds.until(lambda r: len(r) >= 3, 90, [worker])
            assert not any(NEW.item_id in row for row in _recommended(preds.records))
            await publish_catalog(s, [NEW, CONTROL])  # after training, while it runs
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
