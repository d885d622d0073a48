"""The language model at serve time, against the real broker: every event with text gets a
sentiment from the served model, and trends carry the mean, the texts behind it and its change."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson

from schemas import Prediction
from schemas.settings import Settings
from tests.support.helpers import NEGATIVE_WORDS, POSITIVE_WORDS
from tests.support.worker_harness import TopicReader, WorkerProcess, keyed, produce
from workers.kafka.topics import create_topics

WINDOWS = 6
REVIEWS_PER_WINDOW = 4


def _events(settings: Settings) -> list[dict]:
    """Per trend window, reviews of item ``liked`` (praise) and ``hated`` (complaints), and
    searches whose text is no opinion; each window's events in time order."""
    width = settings.trend_window_seconds
    start = 1_700_000_000 // width * width
    out = []
    for w in range(WINDOWS):
        for k in range(REVIEWS_PER_WINDOW):
            ts = start + w * width + 10 + k * 20
            good, bad = POSITIVE_WORDS[k % 6], NEGATIVE_WORDS[k % 6]
            for item, text, user in (
                ("liked", f"the film was {good} , truly {good}", f"a{k}"),
                ("hated", f"the story was {bad} , so {bad}", f"b{k}"),
            ):
                out.append(
                    {
                        "event_id": f"{item}-{w}-{k}",
                        "user_id": user,
                        "type": "review",
                        "ts": ts,
                        "item_id": item,
                        "text": text,
                        "attrs": {"category": "films"},
                    }
                )
            out.append(
                {
                    "event_id": f"search-{w}-{k}",
                    "user_id": f"s{k}",
                    "type": "search",
                    "ts": ts + 1,
                    "text": f"{good} films",
                }
            )
    return out


async def test_texts_get_lm_sentiment_and_trends_carry_it(served: Settings, tmp_path: Path) -> None:
    s = served
    await create_topics(s)
    events = _events(s)
    await produce(s, s.topic("events"), keyed(events))
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(r) >= len(events), 90, [worker])
        async with TopicReader(s, s.topic("trends")) as trends:

            def closed(records: list) -> bool:
                keys = [orjson.loads(r.value)["key"] for r in records]
                return all(keys.count(f"item:{k}") >= WINDOWS - 2 for k in ("liked", "hated"))

            await trends.until(closed, 60, [worker])
    finally:
        worker.stop()

    by_id = {
        p.event_id: p for p in (Prediction.model_validate_json(r.value) for r in preds.records)
    }
    version = next(iter(by_id.values())).model_version
    for e in events:
        p = by_id[e["event_id"]]
        assert p.model_version == version and p.sentiment is not None
        if e["event_id"].startswith("liked"):
            assert p.sentiment > 0, e["text"]
        elif e["event_id"].startswith("hated"):
            assert p.sentiment < 0, e["text"]

    item_trends = [orjson.loads(r.value) for r in trends.records]
    for key, sign in (("item:liked", 1), ("item:hated", -1)):
        windows = sorted(
            (t for t in item_trends if t["key"] == key), key=lambda t: t["window_start"]
        )
        assert len(windows) >= WINDOWS - 2
        for t in windows:
            assert t["sentiment_count"] == REVIEWS_PER_WINDOW  # the searches are not counted
            assert t["sentiment_mean"] * sign > 0
            texts = t["sentiment_texts"]  # the most negative and most positive behind it
            assert 1 <= len(texts) <= 2 and all(x["event_id"].startswith(key[5:]) for x in texts)
            assert [x["sentiment"] for x in texts] == sorted(x["sentiment"] for x in texts)
        assert windows[0]["sentiment_change"] is None
        for before, after in itertools.pairwise(windows):
            change = after["sentiment_change"]
            assert abs(change - (after["sentiment_mean"] - before["sentiment_mean"])) < 1e-9
    films = [t for t in item_trends if t["key"] == "category:films"]
    assert films and all(t["sentiment_count"] == 2 * REVIEWS_PER_WINDOW for t in films)
