"""Is this worker making progress? ``/healthz``, ``/readyz`` and the stall watchdog.

A Faust worker can stop consuming while its process stays up (faust-streaming #175, #523,
#640): an orchestrator that only sees the process would keep it forever. So progress is
judged where it counts, on each assigned partition of ``events``: its *committed* offset,
which moves only once every output of the events before it is on the broker. A partition that
has work (lag > 0 against the committed offset) and whose committed offset has not moved for
``FORESIGHT_STALL_SECONDS`` makes the worker not ready; after a second such period the worker
says why and exits, so that it is restarted (the events after the commit point are delivered
again: nothing is lost). The same holds for an event loop that stopped sampling at all.

The judgement runs in its own thread and is served by the metrics HTTP server's threads, so
a blocked event loop is seen and reported rather than freezing its own health check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import Gauge, make_wsgi_app

from workers import metrics
from workers.shutdown import exit_now

log = logging.getLogger(__name__)

EXIT_STALLED = 70
"""The exit code of a worker that gave up on a stalled partition (EX_SOFTWARE: restart it)."""

STALLED = Gauge(
    "foresight_partition_stalled",
    "1 while a partition with lag has not committed progress for FORESIGHT_STALL_SECONDS",
    ["partition"],
    registry=metrics.REGISTRY,
)
STALL_SECONDS = Gauge(
    "foresight_partition_stall_seconds",
    "Seconds a partition with lag has gone without committed progress (0 when moving)",
    ["partition"],
    registry=metrics.REGISTRY,
)
READY = Gauge("foresight_ready", "1 when /readyz answers 200", registry=metrics.REGISTRY)


@dataclass
class _Partition:
    committed: int | None
    since: float  # when committed last moved, or when the partition had no lag
    lag: int = 0


@dataclass(frozen=True)
class Sample:
    """What the event loop saw of one assigned partition: committed offset, fetch position and
    high watermark."""

    partition: int
    committed: int | None
    position: int | None
    highwater: int | None

    @property
    def lag(self) -> int:
        if self.highwater is None:
            return 0
        return max(0, self.highwater - (self.committed or 0))


@dataclass
class ProgressWatch:
    """Judges progress from samples; thread-safe (samples come from the event loop, questions
    from HTTP threads and the watchdog thread).

    ``observe`` is called every few seconds with every assigned partition; ``starting`` while
    Faust recovers tables or rebalances (progress is not expected then, so no clock runs).
    ``on_stuck`` is called once, from the watchdog, with the reason to exit."""

    stall_seconds: float
    model_loaded: Callable[[], bool]
    on_stuck: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    _partitions: dict[int, _Partition] = field(default_factory=dict)
    _last_sample: float | None = None
    _starting: str | None = "waiting for partitions"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _gave_up: bool = False

    def starting(self, why: str) -> None:
        """Not ready, and no stall clock runs (recovery, rebalance)."""
        with self._lock:
            now = self.clock()
            self._starting, self._last_sample = why, now
            for state in self._partitions.values():
                state.since = now

    def observe(self, samples: Iterable[Sample]) -> None:
        """Record one round of samples and set every per-partition gauge (consumer lag
        against the fetch position, stall); partitions not in the round are no longer ours,
        and their gauges go (a stale value would be summed into the group's lag)."""
        with self._lock:
            now = self.clock()
            self._starting, self._last_sample = None, now
            seen = set()
            for sample in samples:
                seen.add(sample.partition)
                if sample.highwater is not None and sample.position is not None:
                    metrics.LAG.labels(str(sample.partition)).set(
                        max(0, sample.highwater - sample.position)
                    )
                state = self._partitions.get(sample.partition)
                lag = sample.lag
                if state is None or state.committed != sample.committed or lag == 0:
                    state = self._partitions[sample.partition] = _Partition(sample.committed, now)
                state.lag = lag
            for partition in set(self._partitions) - seen:
                del self._partitions[partition]
                for gauge in (metrics.LAG, STALLED, STALL_SECONDS):
                    gauge.remove(str(partition))
            for partition, state in self._partitions.items():
                stalled_for = now - state.since if state.lag else 0.0
                STALL_SECONDS.labels(str(partition)).set(stalled_for)
                STALLED.labels(str(partition)).set(stalled_for >= self.stall_seconds)

    def problems(self, periods: float = 1.0) -> list[str]:
        """Why the worker is not making progress, judged over ``periods`` stall periods."""
        limit = self.stall_seconds * periods
        with self._lock:
            now = self.clock()
            if self._last_sample is not None and now - self._last_sample >= limit:
                return [
                    f"the event loop has not sampled progress for {now - self._last_sample:.0f} s"
                ]
            return [
                f"partition {partition} has {state.lag} events to do and its committed offset "
                f"{state.committed} has not moved for {now - state.since:.0f} s"
                for partition, state in sorted(self._partitions.items())
                if state.lag and now - state.since >= limit
            ]

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the process answers and serves a model."""
        loaded = self.model_loaded()
        return loaded, {"status": "ok" if loaded else "no model loaded"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: a model, and every assigned partition with work is moving."""
        reasons = [] if self.model_loaded() else ["no model loaded"]
        with self._lock:
            starting = self._starting
            lags = {str(p): s.lag for p, s in sorted(self._partitions.items())}
        if starting:
            reasons.append(starting)
        reasons += self.problems()
        READY.set(not reasons)
        return not reasons, {"status": "; ".join(reasons) or "ok", "lag": lags}

    def check(self) -> None:
        """The watchdog's step: keep the readiness gauge current (whether or not anything
        probes), and give up after two stall periods (once)."""
        self.readiness()
        if self._gave_up or not self.model_loaded():
            return  # a worker waiting for its first model is waiting, not stuck
        problems = self.problems(periods=2.0)
        if problems:
            self._gave_up = True
            self.on_stuck("; ".join(problems))


def exit_stalled(kill_also: Callable[[], int | None], reason: str) -> None:
    """The watchdog's ``on_stuck``: say why and exit at once with EXIT_STALLED.

    A graceful stop would wait on whatever is stuck. Nothing uncommitted is lost: the
    partition's next owner (or this worker, restarted) redelivers from the commit point."""
    log.critical(
        "no progress: %s; exiting with code %d for a restart (uncommitted events are "
        "delivered again)",
        reason,
        EXIT_STALLED,
    )
    exit_now(EXIT_STALLED, kill_also)


def watchdog(watch: ProgressWatch, every: float) -> threading.Thread:
    """A daemon thread that runs ``watch.check`` every ``every`` seconds."""

    def loop() -> None:
        while True:
            time.sleep(every)
            watch.check()

    thread = threading.Thread(target=loop, name="foresight-watchdog", daemon=True)
    thread.start()
    return thread


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would drown the worker's log


def health_app(watch: ProgressWatch) -> Callable:
    """A WSGI app: ``/healthz`` and ``/readyz`` (JSON, 200 or 503), anything else the
    Prometheus exposition of the worker's registry."""
    exposition = make_wsgi_app(metrics.REGISTRY)
    routes = {"/healthz": watch.health, "/readyz": watch.readiness}

    def app(environ: Mapping[str, Any], start_response: Callable) -> list[bytes]:
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return exposition(environ, start_response)
        ok, body = route()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        )
        return [orjson.dumps(body)]

    return app


def serve(port: int, watch: ProgressWatch) -> None:
    """Serve metrics and health on ``port`` (0 = off) from daemon threads."""
    if not port:
        return
    server = make_server(
        "", port, health_app(watch), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="foresight-http", daemon=True).start()
