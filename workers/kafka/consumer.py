"""Faust's Kafka consumer, handing each fetched message to the streams without four tasks.

Faust's fetch loop delivers every message through ``wait_first(callback(message),
suspend_flow.wait())``, so that a delivery blocked on a full stream buffer (or on flow
control) is abandoned when a rebalance suspends the flow. ``wait_first`` creates four tasks
per message and cancels three of them: at 5,000 events/s that was ~15% of the event loop.

Almost every delivery never blocks: it decodes the message and puts it on a queue with room.
So while the flow is not suspended, this consumer steps the delivery once by hand (as
Python 3.12's eager tasks do). If it finished, that is the whole delivery. If it suspended,
the rest of it goes to Faust's own ``wait_first``, raced against the suspension as before, so
the behaviour around rebalances (faust-streaming issue 596) is Faust's.

A delivery that finds its stream's buffer full takes that slow path: Faust's handler waits for
one free slot in a task of its own. While a backlog is read the fetch loop is always ahead of
the agents, so every message found the buffer full and paid for three tasks (~8% of the event
loop). Faust's own remedy, pausing the partition's fetches until the buffer drains, does not
help here: the records already fetched are still delivered one slot at a time, and once every
partition is paused its fetch loop sleeps a whole second. So this consumer fetches on, and
holds a partition's next delivery back from the moment its buffer is under high pressure
(4/5 full) until it has drained to 2/5: one wait per few hundred messages instead of one each.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import types
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from workers.kafka import faust_compat


class _Resumed:
    """The rest of a coroutine that was stepped by hand and suspended on ``pending``.

    Awaiting it carries the coroutine on from where it stopped, passing values, exceptions
    and cancellation through exactly as a plain ``await coro`` would.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: passed on
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as done:
                    return done.value


class EagerDeliveryConsumer(
    faust_compat.InlineConsumer, faust_compat.TransactionalOffsets, faust_aiokafka.Consumer
):
    """Faust's aiokafka consumer with the eager delivery described in the module docstring
    (and, in exactly-once mode, no commits of its own for the transactions' partitions)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver_to_streams = self.callback
        self.callback = self._deliver_when_room
        self._crowded: set[TP] = set()  # partitions whose stream buffer has yet to drain
        self._drained = asyncio.Event()  # binds to the running loop at its first wait

    async def _deliver_when_room(self, message: Any) -> Any:
        """Faust's delivery, once the message's stream buffer has drained if it had filled."""
        while message.tp in self._crowded:
            self._drained.clear()
            await self._drained.wait()
        return await self._deliver_to_streams(message)

    def on_buffer_full(self, tp: TP) -> None:
        """A stream buffer is under high pressure: hold this partition's deliveries back."""
        self._crowded.add(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        """It has drained: deliver again."""
        self._let_go({tp})

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """A partition this worker no longer reads holds nothing back: its stream buffer may
        be cleared or replaced before the drop is ever signalled."""
        self._let_go(revoked)
        await super().on_partitions_revoked(revoked)

    def _let_go(self, partitions: set[TP]) -> None:
        self._crowded.difference_update(partitions)
        self._drained.set()

    async def wait_first(self, *coros: Any, timeout: Any = None) -> faust_compat.WaitResults:
        if not self._is_delivery(coros, timeout) or self.suspend_flow.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        delivery, suspended = coros
        try:
            pending = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return faust_compat.wait_results([delivery], [done.value])
        except BaseException:
            suspended.close()
            raise
        return await super().wait_first(_Resumed(delivery, pending), suspended)

    def _is_delivery(self, coros: tuple[Any, ...], timeout: Any) -> bool:
        """True for the fetch loop's call: a fresh coroutine raced against ``suspend_flow``."""
        if timeout is not None or len(coros) != 2:
            return False
        delivery, suspended = coros
        return (
            isinstance(delivery, types.CoroutineType)
            and inspect.getcoroutinestate(delivery) == inspect.CORO_CREATED
            and isinstance(suspended, types.CoroutineType)
            and inspect.getcoroutinestate(suspended) == inspect.CORO_CREATED
            and inspect.getcoroutinelocals(suspended).get("self") is self.suspend_flow
        )


class EagerDeliveryTransport(faust_aiokafka.Transport):
    Consumer = EagerDeliveryConsumer
    Producer = faust_compat.QuickBufferProducer


class EagerDeliveryApp(faust_compat.TransportApp):
    """A Faust app whose Kafka consumer delivers eagerly (see the module docstring), when the
    broker URL picks Faust's aiokafka transport; any other transport is Faust's own."""

    transport_class = EagerDeliveryTransport
    transactional_topics: frozenset[str] = frozenset()
    """Topics whose offsets the worker commits in transactions, not Faust."""
    fetch_max_wait_ms: int | None = None
    """The consumer's longest wait on the broker for a fetch; None keeps Faust's."""

    def create_event(self, key: Any, value: Any, headers: Any, message: Any) -> Any:
        """Faust's, with the ``Event`` class read from the settings once rather than for
        every message (a settings read records its access: ~1 µs a message)."""
        return self._event_class(self, key, value, headers, message)

    @functools.cached_property
    def _event_class(self) -> Any:
        return self.conf.Event

    def on_init_dependencies(self) -> Any:
        """Faust's own services, without its in-memory ``Monitor`` among the sensors that are
        called for every message in and out of a stream: nothing reads its statistics (the
        worker's metrics are its own, workers/metrics.py), and its four calls a message were
        about 5% of the event loop. ``app.monitor`` itself stays, for the offsets Faust
        reports to it directly."""
        dependencies = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return dependencies
