"""The consumer's eager delivery: same outcomes as Faust's wait_first, without its tasks."""

from __future__ import annotations

import asyncio

import pytest
from faust.transport.conductor import ConductorCompiler
from faust.types import TP
from faust.types.tuples import Message
from mode.services import WaitResults

from workers.kafka.consumer import EagerDeliveryApp, EagerDeliveryConsumer


@pytest.fixture
async def consumer() -> EagerDeliveryConsumer:
    # Built inside the running loop (mode binds its events to it); never started, so nothing
    # connects.
    app = EagerDeliveryApp(
        "eager-delivery-test", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False
    )
    assert isinstance(app.consumer, EagerDeliveryConsumer)
    return app.consumer


async def _deliver_counting_tasks(consumer, delivery) -> tuple[WaitResults, list[str]]:
    """The fetch loop's call, with the tasks it created."""
    loop = asyncio.get_running_loop()
    created: list[str] = []

    def counting(loop, coro, **kwargs):
        created.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        return await consumer.wait_first(delivery, consumer.suspend_flow.wait()), created
    finally:
        loop.set_task_factory(None)


async def test_a_delivery_that_does_not_block_runs_inline(consumer) -> None:
    delivered = []

    async def deliver() -> str:
        delivered.append("message")
        return "done"

    result, created = await _deliver_counting_tasks(consumer, deliver())
    assert delivered == ["message"]
    assert result.results == ["done"] and not result.stopped
    assert created == []  # Faust's wait_first would have created four


async def test_a_blocked_delivery_resumes_with_its_value(consumer) -> None:
    room = asyncio.get_running_loop().create_future()

    async def deliver() -> int:
        return await room + 1

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    room.set_result(41)
    result = await asyncio.wait_for(waiting, 1)
    assert result.results == [42]


async def test_a_blocked_delivery_is_abandoned_when_the_flow_is_suspended(consumer) -> None:
    seen = []

    async def deliver() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # a buffer that never empties
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.stop_flow()  # a rebalance
    result = await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert seen == ["cancelled"]
    assert result.results == [True]  # only the suspension won


async def test_errors_in_a_delivery_propagate(consumer) -> None:
    async def fails_at_once() -> None:
        raise ValueError("undecodable")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    with pytest.raises(ValueError, match="undecodable"):
        await consumer.wait_first(fails_at_once(), consumer.suspend_flow.wait())
    with pytest.raises(KeyError, match="later"):
        await consumer.wait_first(fails_later(), consumer.suspend_flow.wait())


async def test_while_the_flow_is_suspended_faust_races_as_before(consumer) -> None:
    consumer.stop_flow()

    async def deliver() -> None:
        return None

    try:
        result, created = await _deliver_counting_tasks(consumer, deliver())
    finally:
        consumer.resume_flow()
    assert len(created) == 4  # Faust's wait_first: delivery, suspension, stopped, crashed
    assert result.done


async def _feed(consumer, tp: TP, count: int, fed: list[int]) -> None:
    """The fetch loop's deliveries of ``count`` messages of one partition, in order."""
    for offset in range(count):
        message = Message(tp.topic, tp.partition, offset, 0.0, 0, [], b"user", b"%d" % offset, None)
        await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
        fed.append(offset)


def _stream_buffer(consumer, tp: TP, size: int):
    """A stream's buffer of ``size`` and Faust's handler delivering ``tp`` into it."""
    app = consumer.app
    channel = app.channel(maxsize=size)
    consumer._deliver_to_streams = ConductorCompiler().build(app.topics, tp, {channel})
    app.flow_control.resume()
    return channel.queue


async def test_a_crowded_stream_buffer_holds_its_partition_back_until_it_drains(consumer) -> None:
    tp = TP("events", 0)
    buffer = _stream_buffer(consumer, tp, size=10)
    fed: list[int] = []
    feeding = asyncio.ensure_future(_feed(consumer, tp, 20, fed))
    await asyncio.sleep(0.02)
    # High pressure is 8 queued (4/5): the ninth is queued, the tenth waits, with room left.
    assert len(fed) == 9 and buffer.qsize() == 9
    taken = []
    for _ in range(5):  # down to 4 (2/5): the drop is seen at the next take
        taken.append(int(buffer.get_nowait().value))
        await asyncio.sleep(0.005)
    assert len(fed) == 9
    taken.append(int(buffer.get_nowait().value))
    await asyncio.sleep(0.005)
    assert len(fed) > 9  # delivering again
    while len(taken) < 20:
        taken.append(int((await asyncio.wait_for(buffer.get(), 1)).value))
    await asyncio.wait_for(feeding, 1)
    assert taken == list(range(20))  # nothing lost, nothing reordered


async def test_a_busy_stream_costs_a_task_per_wait_not_per_message(consumer) -> None:
    """The reason for holding back: a backlog read into a full buffer made three tasks a
    message (Faust's own wait for one free slot)."""
    tp = TP("events", 1)
    buffer = _stream_buffer(consumer, tp, size=50)
    loop = asyncio.get_running_loop()
    created: list[str] = []

    def counting(loop, coro, **kwargs):
        created.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def read_slowly() -> None:  # slower than the fetch loop, as in a backlog
        for _ in range(1000):
            await buffer.get()
            await asyncio.sleep(0)

    fed: list[int] = []
    feeding = asyncio.ensure_future(_feed(consumer, tp, 1000, fed))
    loop.set_task_factory(counting)
    try:
        await asyncio.wait_for(read_slowly(), 5)
    finally:
        loop.set_task_factory(None)
    await asyncio.wait_for(feeding, 1)
    assert fed == list(range(1000))
    assert len(created) < 250, created[:12]  # a wait (4 tasks) per 20 messages; was 3 each


def _recording_deliveries(consumer) -> list[TP]:
    """The partitions of the messages handed to the streams, in order."""
    delivered: list[TP] = []

    async def to_streams(message) -> None:
        delivered.append(message.tp)

    consumer._deliver_to_streams = to_streams
    return delivered


async def test_other_partitions_are_delivered_while_one_is_held_back(consumer) -> None:
    crowded, free = TP("events", 2), TP("events", 3)
    delivered = _recording_deliveries(consumer)
    consumer.on_buffer_full(crowded)
    held = asyncio.ensure_future(_feed(consumer, crowded, 1, []))
    await _feed(consumer, free, 1, [])
    await asyncio.sleep(0.01)
    assert delivered == [free]
    consumer.on_buffer_drop(crowded)
    await asyncio.wait_for(held, 1)
    assert delivered == [free, crowded]


async def test_a_revoked_partition_holds_nothing_back(consumer) -> None:
    tp = TP("events", 4)
    delivered = _recording_deliveries(consumer)
    consumer.on_buffer_full(tp)
    held = asyncio.ensure_future(_feed(consumer, tp, 1, []))
    await asyncio.sleep(0.01)
    assert delivered == []
    await consumer.on_partitions_revoked({tp})
    await asyncio.wait_for(held, 1)
    assert delivered == [tp]


async def test_the_workers_kafka_consumer_waits_on_the_broker_as_configured() -> None:
    """Faust builds its aiokafka consumer with a 1,500 ms fetch wait; the worker's is its own
    setting (a dry partition is not fetched while another fetch waits)."""
    from schemas.settings import Settings
    from workers.app import build_faust_app

    app = build_faust_app(Settings(broker="kafka://127.0.0.1:1", fetch_max_wait_ms=77))
    thread = app.consumer._thread  # what Faust starts; its consumer is built when it starts
    kafka = thread._create_worker_consumer(app.transport)
    try:
        assert kafka._fetch_max_wait_ms == 77  # what aiokafka's fetcher is given at start()
    finally:
        await kafka.stop()


async def test_the_workers_kafka_consumer_runs_on_the_workers_own_loop() -> None:
    """Faust's consumer "thread" is a service on the worker's loop: what Faust hands it
    through ``call_thread`` (fetch, commit, seek) runs right there, in this thread, with no
    hand-off across threads (workers/kafka/faust_compat.py ``InlineConsumer``)."""
    import threading

    from schemas.settings import Settings
    from workers.app import build_faust_app

    app = build_faust_app(Settings(broker="kafka://127.0.0.1:1"))
    thread = app.consumer._thread
    here = (threading.get_ident(), asyncio.get_running_loop())
    ran_in = []

    async def call(value: int) -> int:
        ran_in.append((threading.get_ident(), asyncio.get_running_loop()))
        return value + 1

    assert await asyncio.wait_for(thread.call_thread(call, 41), 1) == 42
    assert await asyncio.wait_for(thread.call_thread(lambda: 7), 1) == 7  # plain functions too
    assert ran_in == [here]
    assert thread.thread_loop is here[1]


async def test_the_faust_app_takes_the_fast_paths_and_reads_no_setting_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's repaired Cython stream path is on, and neither the event a message becomes nor
    the producer-buffer check before each delivery reads ``app.conf`` (a settings read records
    its access: ~1 µs a message each)."""
    from schemas.settings import Settings
    from workers.app import build_faust_app
    from workers.kafka.faust_compat import QuickSizeBuffer

    app = build_faust_app(Settings(store="memory://"))
    assert app.conf.cython_optimizations is True
    buffer = app.producer.buffer
    assert isinstance(buffer, QuickSizeBuffer) and buffer.app is app
    message = Message("events", 0, 7, 0.0, 0, None, b"u1", b"{}", None)
    first = app.create_event(b"u1", b"{}", None, message)  # the class is read once, here

    def no_settings_read(self):
        raise AssertionError("a setting was read for a message")

    settings_class = type(app.conf)
    monkeypatch.setattr(settings_class, "Event", property(no_settings_read))
    monkeypatch.setattr(settings_class, "producer_threaded", property(no_settings_read))
    event = app.create_event(b"u1", b"{}", None, message)
    assert type(event) is type(first) and event.message is message and event.value == b"{}"
    assert buffer.size == 0
    buffer.pending.put_nowait(object())
    assert buffer.size == 1
    await buffer.wait_until_ebb()  # what the conductor awaits before every delivery


async def test_a_threaded_producer_keeps_fausts_own_buffer() -> None:
    """Its buffer's size counts the producer thread's queue, which QuickSizeBuffer does not."""
    from faust.transport.producer import ProducerBuffer

    app = EagerDeliveryApp(
        "threaded-producer-test",
        broker="kafka://127.0.0.1:1",
        web_enabled=False,
        autodiscover=False,
        producer_threaded=True,
    )
    assert type(app.producer.buffer) is ProducerBuffer
