"""The worker's pure parts: sequence state, micro-batcher, alert policy, trends, generator."""

from __future__ import annotations

import asyncio
import inspect
import os

import numpy as np
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from schemas import decode_event
from schemas.internal import TrendPartial
from schemas.records import TREND_TEXT_CHARS, CatalogItem, Trend, item_text
from workers.analytics.alerts import AlertPolicy
from workers.analytics.sentiment import lexicon_sentiment
from workers.analytics.trends import (
    HOLD,
    MAX_OPEN_WINDOWS,
    TrendAccumulator,
    TrendAggregator,
    worker_watermark,
)
from workers.kafka.publisher import _hash_slot
from workers.pipeline.acks import OrderedAcks
from workers.pipeline.batcher import MicroBatcher
from workers.pipeline.sequence import SeqEvent, UserSequence
from workers.tools.bench_report import latency_by_second
from workers.tools.generator import Generator


def ev(i: int, ts: float, item: str | None = "i", etype: str = "view") -> SeqEvent:
    return SeqEvent(ts, etype, f"e{i}", item, None)


def test_insert_keeps_time_order_and_dedups() -> None:
    seq = UserSequence()
    assert seq.insert(ev(1, 10.0), 100, 50)
    assert seq.insert(ev(2, 30.0), 100, 50)
    assert seq.insert(ev(3, 20.0), 100, 50)  # late: lands in the middle
    assert not seq.insert(ev(2, 30.0), 100, 50)  # redelivered: not appended twice
    assert [e.event_id for e in seq.events] == ["e1", "e3", "e2"]
    assert [e.event_id for e in seq.upto("e3")] == ["e1", "e3"]


def test_window_and_length_bounds() -> None:
    seq = UserSequence()
    for i in range(10):
        seq.insert(ev(i, float(i * 10)), window_seconds=35, max_length=50)
    assert [e.event_id for e in seq.events] == ["e6", "e7", "e8", "e9"]  # within 35 s of e9
    seq = UserSequence()
    for i in range(10):
        seq.insert(ev(i, float(i)), window_seconds=1e9, max_length=3)
    assert [e.event_id for e in seq.events] == ["e7", "e8", "e9"]


@given(
    st.lists(
        st.tuples(
            st.floats(1e9, 2e9),
            st.sampled_from(["view", "purchase", "login"]),
            st.text(min_size=1, max_size=20),
            st.none() | st.text(max_size=40),
            st.none() | st.floats(0, 1e6, width=32),
        ),
        max_size=30,
    ),
    st.floats(0, 2e9),
)
def test_binary_encoding_round_trips(rows, updated_at) -> None:
    seq = UserSequence([SeqEvent(*r) for r in rows], updated_at)
    assert UserSequence.from_bytes(seq.to_bytes()) == seq


def test_updated_at_read_from_header() -> None:
    seq = UserSequence([ev(1, 10.0)], updated_at=1234.5)
    assert UserSequence.updated_at_of(seq.to_bytes()) == 1234.5
    assert UserSequence.updated_at_of(b"") == 0.0


def test_encoding_is_compact() -> None:
    seq = UserSequence(
        [SeqEvent(1.7e9 + i, "view", f"evt-{i:06d}", f"item-{i}", None) for i in range(50)]
    )
    as_json = orjson.dumps([e._asdict() for e in seq.events])
    assert len(seq.to_bytes()) < len(as_json) / 2


async def test_batcher_fills_under_load_and_flushes_when_idle() -> None:
    batches: list[list[int]] = []

    async def handle(batch: list[int], free) -> None:
        batches.append(batch)

    batcher = MicroBatcher(handle, max_size=8, max_wait_ms=30)
    for i in range(20):
        await batcher.submit(i)
    batcher.start()
    await asyncio.sleep(0.1)
    await batcher.submit(99)  # a lone event when idle goes at once
    await asyncio.sleep(0.1)
    await batcher.stop()
    assert [len(b) for b in batches] == [8, 8, 4, 1]
    assert [x for b in batches for x in b] == [*range(20), 99]


async def test_batcher_hands_over_the_next_batch_while_one_is_handled() -> None:
    started: list[list[int]] = []
    running, most = 0, 0

    async def handle(batch: list[int], free) -> None:
        nonlocal running, most
        started.append(batch)
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1

    batcher = MicroBatcher(handle, max_size=4, max_wait_ms=10, concurrency=2)
    for i in range(16):
        await batcher.submit(i)
    batcher.start()
    await asyncio.sleep(0.3)
    await batcher.stop()
    assert most == 2
    assert [x for b in started for x in b] == list(range(16))


async def test_batcher_counts_the_wait_from_submission() -> None:
    """An item that already waited its W in the queue (both batches busy) closes its batch as
    soon as the batcher takes it, with what is queued behind it: it does not wait W again."""
    taken: list[list[int]] = []
    release = asyncio.Event()

    async def handle(batch: list[int], free) -> None:
        taken.append(batch)
        if batch[0] == 0:
            await release.wait()

    batcher = MicroBatcher(handle, max_size=8, max_wait_ms=100, concurrency=1)
    batcher.start()
    await batcher.submit(0)
    await asyncio.sleep(0.15)  # batch [0] closed and is being handled
    await batcher.submit(1)
    await asyncio.sleep(0.15)  # 1 has waited past its 100 ms while [0] held the one slot
    await batcher.submit(2)
    release.set()
    await asyncio.sleep(0.05)  # counted from when the batcher took it, 1 would wait 0.1 more
    await batcher.stop()
    assert taken == [[0], [1, 2]]


async def test_batcher_hands_a_lone_event_over_at_once_when_idle() -> None:
    """Nothing holds the first stage: the event does not wait its W (10 s) for company."""
    handed = asyncio.Event()

    async def handle(batch: list[int], free) -> None:
        handed.set()

    batcher = MicroBatcher(handle, max_size=8, max_wait_ms=10_000)
    batcher.start()
    await batcher.submit(1)
    await asyncio.wait_for(handed.wait(), 1.0)
    await batcher.stop()


async def test_batcher_closes_a_batch_when_the_first_stage_is_freed() -> None:
    """While batch [0] holds the first stage the next batch grows; it closes the moment [0]
    frees the stage, though [0] is still being handled (publishing) and W is far off."""
    taken: list[list[int]] = []
    scored, published = asyncio.Event(), asyncio.Event()

    async def handle(batch: list[int], free) -> None:
        taken.append(batch)
        if batch == [0]:
            await scored.wait()
            free()
            await published.wait()

    batcher = MicroBatcher(handle, max_size=100, max_wait_ms=10_000, concurrency=2)
    batcher.start()
    await batcher.submit(0)
    await asyncio.sleep(0.05)
    for i in (1, 2):
        await batcher.submit(i)
    await asyncio.sleep(0.1)
    assert taken == [[0]]  # [1, 2] waits while the stage is busy
    scored.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(taken) == 2:
            break
    assert taken == [[0], [1, 2]] and not published.is_set()
    published.set()
    await batcher.stop()


async def test_batcher_fills_batches_behind_a_backlog_though_the_stage_is_free() -> None:
    """Not caught up: a free stage does not close the batch; it waits W (or fills)."""
    taken: list[list[int]] = []

    async def handle(batch: list[int], free) -> None:
        taken.append(batch)

    batcher = MicroBatcher(handle, max_size=3, max_wait_ms=200, caught_up=lambda item: False)
    batcher.start()
    await batcher.submit(1)
    await asyncio.sleep(0.1)
    assert taken == []  # the stage is free, but the batch waits for company
    await batcher.submit(2)
    await asyncio.sleep(0.2)
    assert taken == [[1, 2]]  # closed by W
    for i in (3, 4, 5):
        await batcher.submit(i)
    await asyncio.sleep(0.05)
    assert taken == [[1, 2], [3, 4, 5]]  # closed full, before W
    await batcher.stop()


def test_alert_policy_thresholds_and_cooldown() -> None:
    policy = AlertPolicy(risk_threshold=0.8, surprise_threshold=0.99, cooldown=60)
    assert policy.decide("u", 0.5, 0.5, now=0) == []
    assert [k for k, *_ in policy.decide("u", 0.9, 0.995, now=1)] == ["fraud_risk", "anomaly"]
    assert policy.decide("u", 0.95, 0.999, now=30) == []  # cooling down
    assert [k for k, *_ in policy.decide("v", 0.9, 0.1, now=30)] == ["fraud_risk"]
    assert [k for k, *_ in policy.decide("u", 0.9, 0.1, now=62)] == ["fraud_risk"]
    quiet = AlertPolicy(0.8, 0.99, 60, anomaly_enabled=False)
    assert quiet.decide("u", 0.1, 1.0, now=0) == []


def test_lexicon_fallback_sentiment() -> None:
    assert lexicon_sentiment("Great product, love it") == 1.0
    assert lexicon_sentiment("broken and terrible") == -1.0
    assert lexicon_sentiment("great but broken") == 0.0
    assert lexicon_sentiment("it is a lamp") is None


def _validated(records: list[dict]) -> list[Trend]:
    """The aggregator's Trend records, each validated against the published schema."""
    return [Trend.model_validate_json(orjson.dumps(record)) for record in records]


def test_two_phase_trends_merge_partials_from_several_workers() -> None:
    worker_a, worker_b = TrendAccumulator(60), TrendAccumulator(60)
    for i in range(6):
        worker_a.add("p1", "toys", "view", 1000.0 + i, None)
    worker_b.add("p1", "toys", "purchase", 1010.0, 1.0)
    agg = TrendAggregator(60)
    for partial in worker_a.drain() + worker_b.drain():  # through the wire, as in the worker
        assert TrendPartial.model_validate(partial)
        assert agg.add(orjson.loads(orjson.dumps(partial))) == []
    agg.hear("a", 0, 1200.0, now=0.0)
    assert agg.close(1079.0) == []  # window 960-1020 plus a minute's grace: not yet
    out = agg.close(agg.watermark(now=1.0))
    item = next(t for t in _validated(out) if t.key == "item:p1")
    assert item.volume == 7 and item.engagement["purchase"] == 1
    assert item.conversion == pytest.approx(1 / 6)
    assert item.sentiment_mean == 1.0 and item.sentiment_count == 1
    assert item.window_start == 960.0 and item.window_end == 1020.0
    assert {t.key for t in _validated(out)} == {"item:p1", "category:toys"}


def test_a_window_waits_for_the_slowest_worker_and_partition() -> None:
    """The case that dropped partials: one partition read an hour of event time ahead of
    another. Its later windows must not close the earlier one before the slow partition's
    partials are in."""
    agg = TrendAggregator(60)
    fast, slow = TrendAccumulator(60), TrendAccumulator(60)
    fast.add("p1", None, "view", 1000.0, None)
    fast.add("p1", None, "view", 4600.0, None)  # an hour on, on the fast partition
    for partial in fast.drain():
        agg.add(partial)
    agg.hear("fast", 0, 4600.0, now=0.0)
    agg.hear("slow", 0, 990.0, now=0.0)  # the slow worker is still before the first window
    assert agg.close(agg.watermark(now=0.0)) == []
    slow.add("p1", None, "view", 1010.0, None)
    for partial in slow.drain():
        agg.add(partial)
    agg.hear("slow", 0, 4600.0, now=1.0)
    first, *_ = agg.close(agg.watermark(now=1.0))
    assert (first["window_start"], first["volume"]) == (960.0, 2) and agg.late == 0
    agg.add({**first, "volume": 1, "counts": {}, "sentiment_sum": 0.0, "sentiment_count": 0})
    assert agg.late == 1  # a partial for an emitted window is dropped and counted


def test_a_silent_source_stops_holding_windows_open() -> None:
    agg = TrendAggregator(60, source_timeout=30.0)
    agg.hear("alive", 0, 5000.0, now=100.0)
    agg.hear("dead", 0, 1000.0, now=80.0)
    agg.hear("alive", 1, 4000.0, now=100.0)  # a source counts at its slowest partition
    assert agg.watermark(now=100.0) == 1000.0
    assert agg.watermark(now=111.0) == 4000.0  # "dead" not heard for 31 s


def test_the_watermark_of_a_worker_is_its_slowest_partition_with_events_to_come() -> None:
    reached = {0: 500.0, 1: 900.0, 2: 100.0}
    assert worker_watermark(reached, {0: False, 1: False, 2: True}) == 500.0  # 2 is idle
    assert worker_watermark(reached, {0: True, 1: True, 2: True}) == 900.0  # all: the newest
    assert worker_watermark(reached, {0: False, 3: False}) == HOLD  # 3: events, time unknown
    assert worker_watermark({}, {0: True}) is None  # nothing read yet, and nothing to read
    assert worker_watermark(reached, {}) is None  # no partition assigned


def test_a_key_holds_a_bounded_number_of_open_windows() -> None:
    agg = TrendAggregator(10)
    parts = TrendAccumulator(10)
    for i in range(MAX_OPEN_WINDOWS + 3):
        parts.add("a", None, "view", 10.0 * i, None)
    early = [t for partial in parts.drain() for t in agg.add(partial)]
    assert [t["window_start"] for t in early] == [0.0, 10.0, 20.0]  # the oldest, in order
    assert len(agg.keys["item:a"].windows) == MAX_OPEN_WINDOWS


def test_trends_carry_their_most_negative_and_most_positive_text() -> None:
    worker_a, worker_b = TrendAccumulator(60), TrendAccumulator(60)
    worker_a.add("p1", None, "review", 1000.0, 0.2, "e1", "fine")
    worker_a.add("p1", None, "review", 1001.0, -0.9, "e2", "awful " * 100)
    worker_a.add("p1", None, "view", 1002.0, None, "e3", None)
    worker_b.add("p1", None, "review", 1003.0, 0.8, "e4", "<b>great</b>")
    worker_b.add("p2", None, "review", 1004.0, 0.5, "e5", "only one")
    agg = TrendAggregator(60)
    for partial in [*worker_a.drain(), *worker_b.drain()]:
        agg.add(TrendPartial.model_validate_json(orjson.dumps(partial)).model_dump())
    old = {"key": "item:p1", "window_start": 1200.0, "volume": 1, "counts": {}}
    agg.add({**old, "sentiment_sum": 0.0, "sentiment_count": 0})  # no texts: older worker
    trends = agg.flush(watermark=1400.0)
    trends = _validated(trends)
    first, later = [t for t in trends if t.key == "item:p1"]
    assert later.sentiment_texts == []
    assert [(t.event_id, t.sentiment) for t in first.sentiment_texts] == [("e2", -0.9), ("e4", 0.8)]
    assert len(first.sentiment_texts[0].text) == TREND_TEXT_CHARS
    assert (
        first.sentiment_texts[1].text == "<b>great</b>"
    )  # kept as written: escaping is the reader's
    (only,) = [t for t in trends if t.key == "item:p2"]
    assert [t.event_id for t in only.sentiment_texts] == ["e5"]


def test_zscore_flags_a_spike() -> None:
    agg = TrendAggregator(10)
    out = []
    for window, volume in enumerate([5, 6, 5, 6, 5, 60, 5]):
        partial = TrendPartial(
            key="item:x",
            window_start=window * 10.0,
            volume=volume,
            counts={},
            sentiment_sum=0,
            sentiment_count=0,
        )
        out += agg.add(partial.model_dump())
    assert out == []
    out = _validated(agg.flush(watermark=1000.0))
    assert [t.volume for t in out] == [5, 6, 5, 6, 5, 60, 5]
    spike = next(t for t in out if t.volume == 60)
    assert spike.zscore > 3 and spike.volume_change > 50


def test_generator_is_deterministic_valid_and_labelled() -> None:
    a = list(Generator(seed=3).events(3000))
    b = list(Generator(seed=3).events(3000))
    assert a == b and len(a) == 3000
    for event, _ in a:
        decode_event(orjson.dumps(event))
    patterns = {p for _, p in Generator(seed=3, fraud_rate=0.2).events(3000)}
    assert patterns >= {None, "account_takeover", "card_testing", "scraping"}


def test_generated_catalog_rows_are_catalog_items_that_read_like_the_events() -> None:
    generator = Generator(items=40, seed=3)
    items = [CatalogItem.model_validate(item.catalog_row()) for item in generator.items]
    assert [i.item_id for i in items] == [f"p{n}" for n in range(40)]
    texts = {i.item_id: i.text() for i in items}
    for event, _ in generator.events(500):
        if "item_id" in event:
            attrs = event["attrs"]
            assert texts[event["item_id"]] == item_text(attrs["title"], attrs["category"])


class _Message:
    def __init__(self, partition: int, offset: int, generation: int) -> None:
        self.tp = ("events", partition)
        self.offset = offset
        self.generation_id = generation


class _Event:
    """Stands in for a Faust event: records when Faust would hear of its ack."""

    def __init__(self, acked: list, partition: int, offset: int, generation: int = 1) -> None:
        self.message = _Message(partition, offset, generation)
        self._acked = acked

    def ack(self) -> None:
        self._acked.append((self.message.tp[1], self.message.offset))


def _acks(generation: list[int], committed: dict | None = None) -> OrderedAcks:
    return OrderedAcks(lambda: generation[0], (committed or {}).get)


def test_acks_reach_faust_in_consumption_order_per_partition() -> None:
    acked: list = []
    acks = _acks([1])
    slots = [acks.track(_Event(acked, p, o)) for o in range(3) for p in (0, 1)]
    acks.done(slots[4])  # partition 0, offset 2: finished first, but 0 and 1 are not
    acks.done(slots[1])  # partition 1, offset 0
    assert acked == [(1, 0)]
    acks.done(slots[0])
    assert acked == [(1, 0), (0, 0)]
    acks.done(slots[2])  # partition 0, offset 1 releases offset 2 behind it
    assert acked == [(1, 0), (0, 0), (0, 1), (0, 2)]
    acks.done(slots[5], slots[3])  # one call for several: partition 1 drains in order
    assert acked[4:] == [(1, 1), (1, 2)]


def test_acks_skip_older_generations_and_forgotten_partitions() -> None:
    acked: list = []
    generation = [1]
    acks = _acks(generation)
    old = acks.track(_Event(acked, 0, 0, generation=1))
    generation[0] = 2  # a rebalance: Faust delivers offset 0 again, in a new line
    new = acks.track(_Event(acked, 0, 0, generation=2))
    acks.done(old)
    acks.done(new)
    assert acked == [(0, 0)]
    gone = acks.track(_Event(acked, 1, 5, generation=2))
    acks.forget([("events", 1)])
    acks.done(gone)
    assert acked == [(0, 0)]


def test_acks_refuse_second_copies_and_report_jumps(caplog: pytest.LogCaptureFixture) -> None:
    acked: list = []
    acks = _acks([1], {("events", 0): 3})
    first = acks.track(_Event(acked, 0, 3))  # starts where Faust committed: no warning
    assert acks.track(_Event(acked, 0, 3)) is None  # the same offset again after a seek
    assert first is not None
    acks.done(first)
    assert acked == [(0, 3)]
    assert "never reached" not in caplog.text
    later = acks.track(_Event(acked, 0, 7))  # 4..6 never reached the stream
    assert "offsets 4..6 never reached the stream" in caplog.text
    assert acks.track(_Event(acked, 1, 2)) is not None  # no committed offset: any start
    assert caplog.text.count("never reached") == 1
    assert later is not None
    acks.done(later)
    assert acked == [(0, 3), (0, 7)]


def test_acks_say_where_each_partition_is_unfinished_from() -> None:
    acked: list = []
    generation = [1]
    acks = _acks(generation, {("events", 0): 3, ("events", 1): 9})
    assert acks.unfinished_from(("events", 0)) == 3  # nothing taken yet: the committed offset
    first, second = acks.track(_Event(acked, 0, 3)), acks.track(_Event(acked, 0, 4))
    assert first is not None and second is not None
    acks.done(second)
    assert acks.unfinished_from(("events", 0)) == 3  # offset 3 still in the line
    acks.done(first)
    assert acks.unfinished_from(("events", 0)) == 5  # all taken are done: the next to take
    generation[0] = 2  # a rebalance: the old line says nothing any more
    assert acks.unfinished_from(("events", 0)) == 3
    assert acks.unfinished_from(("events", 2)) is None  # never committed, never taken


def test_publisher_partitions_keys_like_kafkas_default_partitioner() -> None:
    partitions = [0, 1, 2, 3, 4, 5]
    for key in (b"u1", b"u42", b"user-\xff", b""):
        expected = DefaultPartitioner()(key, partitions, partitions)
        assert _hash_slot(key, len(partitions)) == expected
        assert _hash_slot(key, len(partitions)) == expected  # cached: the same answer
    assert {_hash_slot(None, 6) for _ in range(200)} == set(partitions)  # no key: spread


def test_latency_by_second_buckets_by_produce_time() -> None:
    produced = np.array([900.0, 1300.0, 2550.0, 1800.0])
    latency = np.array([100.0, 200.0, 50.0, 900.0])
    rows = latency_by_second(produced, latency)
    assert [(r["second"], r["events"], r["max"]) for r in rows] == [(0, 3, 900.0), (1, 1, 50.0)]


def test_machine_cpu_counts_everything_but_idle_and_io_wait() -> None:
    from workers.tools.worker_processes import machine_cpu_seconds

    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  600 10 200 1000 90 5 25 70 300 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    busy, every = machine_cpu_seconds(stat)
    assert busy * tick == pytest.approx(910) and every * tick == pytest.approx(2000)


def test_cpu_share_is_each_part_of_the_busy_cores() -> None:
    from workers.tools.contention import CpuSnapshot

    before = CpuSnapshot(10.0, (100.0, 400.0), {"process": 5.0, "children": 1.0}, 2.0, 7.0)
    after = CpuSnapshot(12.0, (103.0, 404.0), {"process": 6.0, "children": 1.5}, 2.2, 7.3)
    share = before.share_until(after)
    assert share["machine_busy"] == 0.75  # 3 of 4 core-seconds: two cores for two seconds
    assert (share["worker"], share["scoring_process"], share["bench"]) == (0.5, 0.25, 0.1)
    assert share["broker_and_other"] == 0.65  # 1.5 busy cores less the 0.85 accounted for
    assert share["loop_waiting"] == 0.15  # 0.3 s of the two in the run queue


def test_stage_latency_counts_only_the_batches_between_two_scrapes() -> None:
    from workers.tools.bench import stage_latency

    before = {"score": {0.001: 5.0, 0.01: 5.0, float("inf"): 5.0}}  # warm-up: 5 fast batches
    after = {
        "score": {0.001: 5.0, 0.01: 105.0, float("inf"): 105.0},  # then 100 in (1, 10] ms
        "ack": {0.001: 0.0, 0.01: 0.0, float("inf"): 0.0},
    }
    stages = stage_latency(before, after)
    assert stages["score"] == {"batches": 100, "p50": 5.5, "p99": 9.91}
    assert stages["ack"] == {"batches": 0, "p50": None, "p99": None}
    assert stages["turn"]["batches"] == 0  # a stage the worker never reported


def test_with_no_watermark_heard_a_quiet_key_closes_on_the_newest_window_of_any_key() -> None:
    """Only workers older than the watermark send partials: windows still close."""
    agg = TrendAggregator(10)
    parts = TrendAccumulator(10)
    parts.add("quiet", None, "view", 100.0, None)
    parts.add("busy", None, "view", 100.0, None)
    for partial in parts.drain():
        agg.add(partial)
    assert agg.flush() == []  # nothing newer yet
    parts.add("busy", None, "view", 125.0, None)  # two windows on, for "busy" only
    for partial in parts.drain():
        agg.add(partial)
    assert [t["key"] for t in agg.flush()] == ["item:busy", "item:quiet"]


def test_trend_keys_are_bounded_forgetting_the_longest_idle_closed_one() -> None:
    agg = TrendAggregator(10, max_keys=3)
    parts = TrendAccumulator(10)
    for item in ("a", "b", "c"):
        parts.add(item, None, "view", 100.0, None)
    for partial in parts.drain():
        agg.add(partial)
    agg.flush(200.0)  # every window closed: no key has an open one
    parts.add("a", None, "view", 210.0, None)  # "a" updated again: "b" is now the idlest
    parts.add("d", None, "view", 210.0, None)
    for partial in parts.drain():
        agg.add(partial)
    assert list(agg.keys) == ["item:c", "item:a", "item:d"]
    parts.add("e", None, "view", 220.0, None)  # every key left has an open window but "c"
    for partial in parts.drain():
        agg.add(partial)
    assert list(agg.keys) == ["item:a", "item:d", "item:e"] and len(agg.keys) == 3
    assert {t["key"] for t in agg.flush(400.0)} == {"item:a", "item:d", "item:e"}


async def test_the_faust_app_fetches_the_configured_bytes_and_skips_the_monitor_sensor() -> None:
    """The consumer's per-partition fetch size is the setting (1 MiB, Faust's default, made
    a backlog replay 20-30% slower), and Faust's Monitor is not called for every message."""
    from schemas.settings import Settings
    from workers.app import build_faust_app

    app = build_faust_app(Settings(store="memory://", fetch_bytes_per_partition=3 << 20))
    assert app.conf.consumer_max_fetch_size == 3 << 20
    app.on_init_dependencies()
    assert app.monitor not in set(app.sensors)


async def test_bench_deletes_its_topics_and_a_failed_clean_up_hides_no_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """The run's topics are deleted after a failed measurement too, under the run's own
    prefixes; a deletion that fails as well leaves the measurement's error to be seen."""
    from schemas.settings import Settings
    from workers.tools import bench

    asked: list[tuple[str, ...]] = []

    async def measure(*args, **kwargs) -> dict:
        raise RuntimeError("the worker died")

    async def delete(settings) -> list[str]:
        asked.append((settings.topic_prefix, settings.app_id))
        raise ConnectionError("broker gone")

    monkeypatch.setattr(bench.registry, "current", lambda registry: "v1")
    monkeypatch.setattr(bench, "_measure", measure)
    monkeypatch.setattr(bench, "delete_run_topics", delete)
    with pytest.raises(RuntimeError, match="the worker died"):
        await bench.run_bench(Settings(topic_prefix="acme."), 10, tmp_path)
    [(prefix, app_id)] = asked  # the run's own, which every measurement's extend
    assert prefix.startswith("acme.bench-") and prefix.endswith(".")
    assert app_id.startswith("bench-")


def test_caught_up_means_less_than_a_batch_behind_the_high_water_mark() -> None:
    from types import SimpleNamespace

    from workers.pipeline.ingest import caught_up

    highwater: dict[str, int | None] = {"p0": 1_000}
    consumer = SimpleNamespace(highwater=lambda tp: highwater[tp])
    check = caught_up(SimpleNamespace(consumer=consumer), batch_size=256)

    def job(offset: int):
        message = SimpleNamespace(tp="p0", offset=offset)
        return SimpleNamespace(slot=SimpleNamespace(event=SimpleNamespace(message=message)))

    assert check(job(999))  # the newest: nothing behind it
    assert check(job(1_000 - 256))  # 255 behind
    assert not check(job(1_000 - 257))  # a whole batch behind: fill batches
    highwater["p0"] = None  # no fetch answered yet for the partition
    assert check(job(0))


def test_a_frozen_heap_leaves_what_exists_out_of_collections_until_it_ends() -> None:
    """The paced producer's heap (every event it will send) is not walked by the collector
    while it sends; afterwards it is collectable again."""
    import gc

    from workers.tuning import frozen_heap

    assert gc.get_freeze_count() == 0  # nothing in the unit tests freezes for good
    held = [[n] for n in range(1_000)]  # tracked objects that exist when the block starts
    with frozen_heap():
        assert gc.get_freeze_count() >= len(held)
        made_inside = [[n] for n in range(10)]
        assert all(gc.is_tracked(x) for x in made_inside)
    assert gc.get_freeze_count() == 0
    assert held[-1] == [999]


def test_the_worker_chooses_its_event_loop_by_name() -> None:
    """``event_loop`` decides which loop the worker's Faust app and services run on."""
    import uvloop

    from workers.tuning import use_event_loop

    before = asyncio.get_event_loop_policy()
    try:
        use_event_loop("uvloop")
        loop = asyncio.new_event_loop()
        assert isinstance(loop, uvloop.Loop)
        loop.close()
        use_event_loop("asyncio")
        loop = asyncio.new_event_loop()
        assert not isinstance(loop, uvloop.Loop)
        loop.close()
        with pytest.raises(ValueError, match="unknown event loop 'tokio'"):
            use_event_loop("tokio")
    finally:
        asyncio.set_event_loop_policy(before)


def test_the_worker_flushes_its_trend_partials_as_often_as_its_setting_says(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each flush is merged in one go on the event loop, so how often it comes decides how
    long the events behind it wait (FORESIGHT_TREND_FLUSH_SECONDS; README, Benchmark)."""
    import faust

    from schemas.settings import Settings
    from workers.app import StreamWorker

    intervals: dict[str, float] = {}
    parameters: dict[str, list[str]] = {}

    def timer(self, interval, **kwargs):
        def register(fun):
            intervals[fun.__name__] = interval
            parameters[fun.__name__] = list(inspect.signature(fun).parameters)
            return fun

        return register

    monkeypatch.setattr(faust.App, "timer", timer)
    settings = Settings(
        store="memory://",
        registry=tmp_path / "registry",
        data_dir=tmp_path,
        metrics_port=0,
        trend_flush_seconds=0.25,
    )
    StreamWorker(settings)
    assert intervals["flush"] == 0.25
    # Faust calls a timer function that takes an argument with the app (a flush(last=False)
    # once got it as ``last`` and marked every record as the worker's last)
    assert parameters and not any(parameters.values()), parameters
