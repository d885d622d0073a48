"""The trend exchange's records: every partition hears the watermark; old records still merge."""

from __future__ import annotations

import orjson
from faust.types import TP

from schemas.internal import TrendPartials
from schemas.settings import Settings
from workers.analytics.trends import HOLD
from workers.kafka.publisher import _hash_slot
from workers.pipeline.trend_exchange import TrendExchange

PARTITIONS = [0, 1, 2]


class _Publisher:
    """Stands in for the worker's producer: keeps what was sent, partitions like Kafka."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    async def partitions(self, topic: str) -> list[int]:
        return PARTITIONS

    async def partitioner(self, topic: str):
        return lambda key: PARTITIONS[_hash_slot(key, len(PARTITIONS))]

    async def send_many(self, topic: str, records) -> list:
        self.sent += [(topic, record) for record in records]
        return []


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    def __init__(self, value: bytes, partition: int) -> None:
        self.value, self.message = value, _Message(partition)


class _Stream:
    """Hands records to the agent as Faust's stream.events() would."""

    def __init__(self, records: list[tuple[bytes, int]]) -> None:
        self.records = records

    async def events(self):
        for value, partition in self.records:
            yield _Event(value, partition)


def _exchange(idle: dict[int, bool]) -> tuple[TrendExchange, _Publisher]:
    async def report() -> dict[int, bool]:
        return idle

    publisher = _Publisher()
    settings = Settings(store="memory://", trend_window_seconds=60)
    return TrendExchange(settings, publisher, report), publisher  # type: ignore[arg-type]


async def test_a_flush_sends_the_watermark_to_every_partition_and_trends_close_on_it() -> None:
    idle = {0: False, 1: False}
    sender, wire = _exchange(idle)
    sender.parts.add("p1", "toys", "view", 1000.0, None)
    sender.parts.reach(0, 1000.0)
    sender.parts.reach(1, 5000.0)  # partition 1 is far ahead; 0 holds the watermark
    await sender.flush()
    records = [TrendPartials.model_validate_json(r.value) for _, r in wire.sent]
    assert sorted(r.partition for _, r in wire.sent) == PARTITIONS  # one each, even if empty
    assert {r.watermark for r in records} == {1000.0}
    assert sum(len(r.partials) for r in records) == 2  # the item's and the category's

    owner, out = _exchange({})
    await owner.merge(_Stream([(r.value, r.partition) for _, r in wire.sent]))
    assert out.sent == []  # 960-1020 is not past the watermark and its grace

    idle[0] = True  # partition 0 read to its end: the watermark moves to the newest, 5000
    wire.sent.clear()
    await sender.flush()
    assert {TrendPartials.model_validate_json(r.value).watermark for _, r in wire.sent} == {5000.0}
    await owner.merge(_Stream([(r.value, r.partition) for _, r in wire.sent]))
    trends = [orjson.loads(r.value) for _, r in out.sent]
    assert sorted(t["key"] for t in trends) == ["category:toys", "item:p1"]

    idle[2] = False  # a partition newly assigned, not read yet: every window is held
    assert await sender.watermark() == HOLD
    sender.parts.reach(2, 4000.0)  # read from its last commit: the watermark resumes there
    assert await sender.watermark() == 4000.0
    sender.assigned([TP(sender.settings.topic("events"), p) for p in (0, 1)])
    assert 2 not in sender.parts.reached  # taken away: if it comes back, it is read first


async def test_records_of_older_workers_merge_and_move_no_watermark() -> None:
    owner, out = _exchange({})
    old = {"key": "item:x", "window_start": 0.0, "volume": 2, "counts": {"view": 2}}
    old.update(sentiment_sum=0.0, sentiment_count=0)  # no texts: older still
    await owner.merge(_Stream([(orjson.dumps([old]), 0), (b"not json", 0)]))
    assert out.sent == [] and owner.trends.watermark(now=0.0) is None
    await owner.close_idle()  # no watermark heard: closes on the newest window, none newer
    assert out.sent == []
    assert owner.trends.keys["item:x"].windows[0.0]["volume"] == 2


async def test_a_partition_no_longer_assigned_holds_no_window_open() -> None:
    owner, _ = _exchange({})
    slow = {"source": "b", "watermark": 100.0, "partials": []}
    fast = {"source": "a", "watermark": 9000.0, "partials": []}
    await owner.merge(_Stream([(orjson.dumps(slow), 1), (orjson.dumps(fast), 0)]))
    assert owner.trends.watermark(now=0.0) == 100.0
    partial = owner.settings.topic("trends.partial")
    owner.assigned([TP(partial, 0), TP(partial, 1), TP(owner.settings.topic("events"), 3)])
    assert owner.trends.watermark(now=0.0) == 100.0  # both kept: nothing forgotten
    owner.assigned([TP(partial, 0), TP(owner.settings.topic("events"), 1)])
    assert owner.trends.watermark(now=0.0) == 9000.0  # partition 1 of trends.partial gone


async def test_a_stopping_workers_last_records_end_the_wait_for_its_watermark() -> None:
    sender, wire = _exchange({0: False})
    sender.parts.add("p1", None, "view", 1000.0, None)
    sender.parts.reach(0, 1000.0)
    await sender.flush()  # an ordinary flush: the sender's watermark is 1000
    owner, out = _exchange({})
    fast = {"source": "other", "watermark": 9000.0, "partials": []}
    await owner.merge(_Stream([(r.value, r.partition) for _, r in wire.sent]))
    await owner.merge(_Stream([(orjson.dumps(fast), p) for p in PARTITIONS]))
    assert out.sent == []  # held open by the sender's 1000
    wire.sent.clear()
    sender.parts.add("p1", None, "view", 1001.0, None)
    await sender.flush_last()
    last = [TrendPartials.model_validate_json(r.value) for _, r in wire.sent]
    assert all(r.last for r in last) and sum(len(r.partials) for r in last) == 1
    await owner.merge(_Stream([(r.value, r.partition) for _, r in wire.sent]))
    (trend,) = [orjson.loads(r.value) for _, r in out.sent]
    assert (trend["key"], trend["volume"]) == ("item:p1", 2)  # both events, closed at once
