"""Exactly-once bookkeeping without a broker: which outputs and offsets go into which
transaction, and when Faust hears of a message. (The real transactions, kill -9 included:
tests/integration/test_exactly_once.py.)"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from schemas.settings import Settings
from workers.kafka.publisher import Record
from workers.pipeline import transactions as transactions_module
from workers.pipeline.acks import OrderedAcks
from workers.pipeline.transactions import Transactions


class _Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.tp = (topic, partition)
        self.generation_id = 1


class _Event:
    def __init__(self, acked: list, topic: str, partition: int, offset: int) -> None:
        self.message = _Message(topic, partition, offset)
        self._acked = acked

    def ack(self) -> None:
        self._acked.append((self.message.topic, self.message.partition, self.message.offset))


class _Publisher:
    """Stands in for a transactional producer: records each transaction; ``gate`` holds a
    commit in progress until the test opens it."""

    made: list[_Publisher] = []
    open_gates = True  # False: each new producer's first commit waits for its gate
    error: Exception | None = None  # raised by every commit

    def __init__(self, settings, on_failure, transactional_id: str) -> None:
        self.on_failure, self.transactional_id = on_failure, transactional_id
        self.committed: list[tuple[dict, dict, str]] = []
        self.gate = asyncio.Event()
        if _Publisher.open_gates:
            self.gate.set()
        self.stopped = False
        _Publisher.made.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def commit_transaction(self, outputs, offsets, group_id) -> list:
        await self.gate.wait()
        if _Publisher.error is not None:
            raise _Publisher.error
        self.committed.append((outputs, offsets, group_id))
        return []

    def fail(self, exc: BaseException) -> None:
        self.on_failure(exc)


@pytest.fixture
def publishers(monkeypatch: pytest.MonkeyPatch) -> list[_Publisher]:
    _Publisher.made, _Publisher.open_gates, _Publisher.error = [], True, None
    monkeypatch.setattr(transactions_module, "Publisher", _Publisher)
    return _Publisher.made


def _setup(failures: list) -> tuple[Transactions, OrderedAcks]:
    txns = Transactions(Settings(app_id="app"), "app", lambda: 1, failures.append)
    return txns, OrderedAcks(lambda: 1, lambda tp: None, release=txns.release)


def _finish(acks: OrderedAcks, event: _Event, *outputs: tuple[str, Record]):
    slot = acks.track(event)
    assert slot is not None
    slot.outputs = list(outputs)
    acks.done(slot)
    return slot


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_partitions_outputs_and_offsets_commit_together_then_faust_hears(
    publishers: list[_Publisher],
) -> None:
    acked: list = []
    txns, acks = _setup([])
    pred = [Record(b"u", b"p%d" % i) for i in range(3)]
    first = _finish(acks, _Event(acked, "events", 0, 10), ("predictions", pred[0]))
    _finish(acks, _Event(acked, "sequences.expire", 0, 4), ("changelog", Record(b"u", None)))
    _finish(acks, _Event(acked, "events", 0, 11), ("predictions", pred[1]), ("alerts", pred[2]))
    other = _finish(acks, _Event(acked, "events", 1, 7), ("predictions", pred[0]))
    assert acked == []  # nothing is finished before its transaction commits
    done = txns.committed([first, other])
    await done
    assert [p.transactional_id for p in publishers] == ["app-eos-0", "app-eos-1"]
    outputs, offsets, group = publishers[0].committed[0]
    assert outputs == {
        "predictions": pred[:2],
        "changelog": [Record(b"u", None)],
        "alerts": pred[2:],
    }
    assert offsets == {TopicPartition("events", 0): 12, TopicPartition("sequences.expire", 0): 5}
    assert group == "app"
    assert publishers[1].committed[0][1] == {TopicPartition("events", 1): 8}
    assert sorted(acked) == [
        ("events", 0, 10),
        ("events", 0, 11),
        ("events", 1, 7),
        ("sequences.expire", 0, 4),
    ]


async def test_what_finishes_during_a_commit_goes_into_the_next_one(
    publishers: list[_Publisher],
) -> None:
    acked: list = []
    txns, acks = _setup([])
    _Publisher.open_gates = False
    _finish(acks, _Event(acked, "events", 0, 0), ("predictions", Record(b"u", b"a")))
    await _settle()  # the first transaction is in progress ...
    later = _finish(acks, _Event(acked, "events", 0, 1), ("predictions", Record(b"u", b"b")))
    assert acked == []
    publishers[0].gate.set()
    await txns.committed([later])
    assert [c[1] for c in publishers[0].committed] == [
        {TopicPartition("events", 0): 1},
        {TopicPartition("events", 0): 2},
    ]
    assert acked == [("events", 0, 0), ("events", 0, 1)]


async def test_a_failed_transaction_stops_the_worker_and_finishes_nothing(
    publishers: list[_Publisher],
) -> None:
    acked: list = []
    failures: list = []
    _, acks = _setup(failures)
    _Publisher.error = RuntimeError("fenced")
    _finish(acks, _Event(acked, "events", 2, 0), ("predictions", Record(b"u", b"a")))
    await _settle()
    assert acked == [] and [str(f) for f in failures] == ["fenced"]


async def test_revoked_partitions_drop_what_did_not_commit_and_close(
    publishers: list[_Publisher],
) -> None:
    acked: list = []
    txns, acks = _setup([])
    _Publisher.open_gates = False
    _finish(acks, _Event(acked, "events", 0, 0), ("predictions", Record(b"u", b"a")))
    await _settle()  # the first transaction is in progress
    late = _finish(acks, _Event(acked, "events", 0, 1), ("predictions", Record(b"u", b"b")))
    waiting = txns.committed([late])
    revoking = asyncio.create_task(txns.revoke([TopicPartition("events", 0)]))
    await _settle()
    publishers[
        0
    ].gate.set()  # the transaction in progress ends; offset 1 is left for the next owner
    await revoking
    await waiting
    assert [c[1] for c in publishers[0].committed] == [{TopicPartition("events", 0): 1}]
    assert acked == [("events", 0, 0)] and publishers[0].stopped
    assert txns.committed([late]).done()  # a revoked partition's slot holds nothing in flight
