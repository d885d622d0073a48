"""Every use of a private part of Faust or mode, in one file, checked against their versions.

The worker relies on nine things these libraries do not offer publicly:

* ``Consumer._committed_offset``: the offset Faust committed and sought to for a partition,
  where each partition's ack line starts (workers/pipeline/acks.py).
* ``Consumer._unacked_messages``, through the public ``Consumer.unacked`` property, which
  returns that very set: a duplicate delivery must leave it, or the next rebalance waits on it.
* ``App._new_transport``: the hook that picks the transport, overridden to swap in the eager
  consumer (workers/kafka/consumer.py).
* ``mode.services.WaitResults``: what ``Service.wait_first`` returns, built by that consumer.
* ``Consumer._commit``: where Faust's commit reaches the broker; in exactly-once mode it must
  leave the partitions whose offsets commit inside transactions to them
  (workers/pipeline/transactions.py).
* ``Consumer._new_consumer_thread`` and ``AIOKafkaConsumerThread._create_worker_consumer``,
  where Faust builds its aiokafka consumer with ``fetch_max_wait_ms`` fixed at 1,500, and
  aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``, which its fetcher reads at ``start()``:
  the worker sets its own (``FORESIGHT_FETCH_MAX_WAIT_MS``).
* aiokafka's ``AIOKafkaConsumer._fetcher`` and its ``Fetcher._prefetch_backoff``, which it reads
  each time a fetch's records are buffered: the worker shortens it
  (``PREFETCH_BACKOFF_SECONDS``, see there).
* ``Producer.buffer`` and its ``ProducerBuffer.pending`` queue: ``QuickBufferProducer`` gives
  Faust's producer a buffer whose size is read without a settings lookup, because Faust's
  conductor asks for it before every message it delivers.
* ``mode.threads.ServiceThread``'s start and stop machinery (``_thread_started``,
  ``_started``, ``_stopped`` and ``Service._default_stop_*``), which
  ``InlineConsumer`` puts back to a plain service's so that Faust's consumer "thread" runs
  on the worker's own event loop (see its docstring).

Each was read in the sources of the versions in ``CHECKED``. ``check_versions`` runs when the
worker starts and refuses, with a message that names this file, any installed version outside
them: a Faust release that renamed one of these would otherwise lose or stall events quietly.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import faust
from faust import transport
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TransportT
from faust.types.settings import Settings as FaustSettings
from mode import Service
from mode.services import WaitResults
from mode.utils.futures import maybe_async
from packaging.specifiers import SpecifierSet
from packaging.version import Version

CHECKED: dict[str, str] = {
    "faust-streaming": ">=0.11,<0.16",
    "mode-streaming": ">=0.4,<0.8",
    "aiokafka": ">=0.10,<0.15",
}
"""The distributions whose private parts this file uses, and the versions it was checked on."""


class IncompatibleFaust(RuntimeError):
    """An installed Faust, mode or aiokafka this shim was not checked against."""


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise IncompatibleFaust unless every distribution in CHECKED is within its range.

    ``installed`` (name → version) is for tests; by default the installed metadata is read."""
    problems = []
    for name, spec in CHECKED.items():
        try:
            found = installed[name] if installed is not None else version(name)
        except (KeyError, PackageNotFoundError):
            problems.append(f"{name} is not installed")
            continue
        if Version(found) not in SpecifierSet(spec):
            problems.append(f"{name} {found} is outside the checked range {spec}")
    if problems:
        raise IncompatibleFaust(
            "; ".join(problems) + ". workers/kafka/faust_compat.py uses private parts of these "
            "libraries: re-read each one in the new sources, then widen CHECKED."
        )


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset Faust committed (and sought to) for ``tp``; None for none or 0."""
    return consumer._committed_offset.get(tp)


def forget_unacked(consumer: Any, message: Any) -> None:
    """Stop Faust waiting for the ack of ``message`` (a second copy of an offset already
    taken, which will never be acked): otherwise the next rebalance waits on it."""
    consumer.unacked.discard(message)


def wait_results(done: list[Any], results: list[Any]) -> WaitResults:
    """What ``Service.wait_first`` returns when ``done`` finished first with ``results``."""
    return WaitResults(done, results, False)


class TransactionalOffsets:
    """Consumer mixin: Faust's own commits skip the topics in ``app.transactional_topics``,
    whose offsets commit inside Kafka transactions. Faust still tracks their acks (its
    ``_committed_offset``, rebalances, waiting for empty streams) exactly as before; only the
    broker commit is left out, so it can never move an offset back behind a transaction."""

    app: Any

    async def _commit(self, offsets: Any) -> bool:
        skip: frozenset[str] = getattr(self.app, "transactional_topics", frozenset())
        kept = {tp: offset for tp, offset in offsets.items() if tp.topic not in skip}
        if not kept:
            return True  # committed already, by the transactions
        return await super()._commit(kept)  # type: ignore[misc]


class InlineConsumer:
    """Consumer mixin: Faust's aiokafka consumer runs on the worker's own event loop, not in
    a thread of its own, and waits at most ``app.fetch_max_wait_ms`` on the broker for a
    fetch (Faust fixes it at 1,500 ms).

    Why no thread: Faust's consumer thread hands every fetch to the event loop across two
    loops and the GIL. On this project's 2-core bench a paced stream of 2,900 events/s cost
    that thread 44-46 µs an event (14,000 ``futex`` calls in 5 s: GIL hand-offs). On one loop a
    fetch is a plain ``await``: at 2,500-3,500 events/s the worker used 9-12% less CPU, with
    the same throughput on a backlog and no measurable change in latency. Every call Faust
    makes through ``call_thread`` (fetch, commit, seek, position, subscribe) and the rebalance
    callbacks keep their order and meaning: they only stop crossing threads.

    Why the wait: aiokafka keeps one fetch in flight per broker, asking only for the
    partitions with nothing buffered; while the broker holds it open for new data, a partition
    whose buffer has just run dry is not fetched at all. With 1,500 ms a worker behind by
    seconds sat idle for ~1 s at a time (its event loop half busy, thousands of records waiting
    in Kafka)."""

    app: Any
    loop: Any
    beacon: Any

    def _new_consumer_thread(self) -> Any:
        consumer: Any = self  # a faust Consumer, as the mixin's users are
        return _InlineConsumerThread(
            consumer, loop=self.loop, thread_loop=self.loop, beacon=self.beacon
        )


PREFETCH_BACKOFF_SECONDS = 0.01
"""Longest a fetched partition nobody has read yet holds up the next fetch (aiokafka's is 0.1).

aiokafka sends a broker no fetch while any partition it fetched from that broker still has
records younger than this that the application has not taken. The worker's consumer is also
assigned its table's changelog partitions, whose records Faust never takes once recovery is
over, so the first fetch that brings back the worker's own changelog writes held every other
partition on the broker for the whole 100 ms. In the bench the first ~150 ms of a latency run
waited up to 120 ms before ingest, and that one stall set the run's p99; with 10 ms it was gone,
and the backlog rate and the event loop's cost per event were no worse
(docs/benchmark-history.md)."""


class _InlineConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread as a plain service on the loop it is given: mode's
    ServiceThread start and stop are put back to ``Service``'s, and ``call_thread`` awaits the
    call itself instead of queueing it for another loop."""

    wait_for_shutdown = False  # a thread's stop waits for the thread to signal it; none here

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms  # read when it starts
        return consumer

    async def on_start(self) -> None:
        await super().on_start()  # builds and starts the aiokafka consumer, and its fetcher
        consumer: Any = self._consumer
        consumer._fetcher._prefetch_backoff = PREFETCH_BACKOFF_SECONDS

    async def start(self) -> None:
        self._thread_started.set()  # what ServiceThread.maybe_start checks
        await Service.start(self)

    async def stop(self) -> None:
        if self._started.is_set():
            await Service.stop(self)

    async def on_stop(self) -> None:
        await self.on_thread_stop()  # stops the aiokafka consumer, as the thread did at its end

    def _stopped_set(self) -> None:
        self._stopped.set()

    async def _stop_children(self) -> None:
        await self._default_stop_children()

    async def _stop_futures(self) -> None:
        await self._default_stop_futures()

    async def _stop_exit_stacks(self) -> None:
        await self._default_stop_exit_stacks()

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def cast_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        # unused by Faust's driver today; the inherited one would queue the call for a method
        # queue that never starts here, so it would never run
        await maybe_async(fun(*args, **kwargs))


def fast_path_settings() -> dict[str, Any]:
    """Faust settings that turn on its repaired Cython fast paths, where this Faust has them:
    ``cython_optimizations`` (0.15) lets the stream iterator take an event already waiting in
    its channel's queue instead of awaiting the channel for each one. Off by default in Faust
    because the repaired paths are new; the worker's at-least-once tests run on them."""
    if "cython_optimizations" in FaustSettings.SETTINGS:
        return {"cython_optimizations": True}
    return {}


class QuickSizeBuffer(ProducerBuffer):
    """Faust's producer buffer without a threaded producer, whose ``size`` is its queue's
    length. Faust's own reads ``app.conf.producer_threaded`` each time, and its conductor
    awaits ``wait_until_ebb`` (which checks ``size``) before delivering every message: a
    settings read records its access, ~1 µs a message, for a buffer the worker never fills
    (its outputs go through workers/kafka/publisher.py)."""

    @property
    def size(self) -> int:
        return self.pending.qsize()


class QuickBufferProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer with a :class:`QuickSizeBuffer`, decided once here: a
    threaded producer keeps Faust's buffer, which counts the thread's queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.app.conf.producer_threaded:
            buffer = QuickSizeBuffer(loop=self.loop, beacon=self.beacon)
            buffer.app = self.app
            self.buffer = buffer


class TransportApp(faust.App):
    """A Faust app whose aiokafka transport is ``transport_class``; any other broker URL
    scheme gets Faust's own transport."""

    transport_class: type[faust_aiokafka.Transport] = faust_aiokafka.Transport

    def _new_transport(self) -> TransportT:
        if transport.by_url(self.conf.broker_consumer[0]) is not faust_aiokafka.Transport:
            return super()._new_transport()
        return self.transport_class(self.conf.broker_consumer, self)
