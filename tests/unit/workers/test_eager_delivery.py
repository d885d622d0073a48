"""The consumer's eager delivery: same outcomes as Faust's wait_first, without its tasks."""

from __future__ import annotations

import asyncio

import pytest
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
