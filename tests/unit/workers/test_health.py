"""The stall watch: when the worker is ready, when it gives up, and what the probes answer."""

from __future__ import annotations

import io

import orjson

from workers import health, metrics
from workers.health import ProgressWatch, Sample


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_watch(loaded: bool = True) -> tuple[ProgressWatch, Clock, list[str]]:
    clock, stuck = Clock(), []
    watch = ProgressWatch(10.0, model_loaded=lambda: loaded, on_stuck=stuck.append, clock=clock)
    return watch, clock, stuck


def test_not_ready_until_partitions_are_sampled():
    watch, _, _ = make_watch()
    ok, body = watch.readiness()
    assert not ok and "waiting for partitions" in body["status"]
    watch.observe([])  # no partitions assigned (more workers than partitions) is fine
    assert watch.readiness()[0]


def test_a_partition_with_lag_and_no_commits_stalls_then_gives_up():
    watch, clock, stuck = make_watch()
    watch.observe([Sample(0, 100, 100, 200), Sample(1, 50, 50, 50)])
    clock.now += 9
    watch.observe([Sample(0, 100, 100, 250), Sample(1, 50, 50, 50)])
    assert watch.readiness()[0]
    clock.now += 2
    watch.observe([Sample(0, 100, 100, 250), Sample(1, 50, 50, 50)])
    ok, body = watch.readiness()
    assert not ok and "partition 0 has 150 events to do" in body["status"]
    assert metrics.REGISTRY.get_sample_value("foresight_partition_stalled", {"partition": "0"}) == 1
    assert metrics.REGISTRY.get_sample_value("foresight_partition_stalled", {"partition": "1"}) == 0
    watch.check()
    assert stuck == []  # one period: not ready, not yet gone
    assert metrics.REGISTRY.get_sample_value("foresight_ready") == 0
    clock.now += 10
    watch.observe([Sample(0, 100, 100, 250), Sample(1, 50, 50, 50)])
    watch.check()
    watch.check()
    assert len(stuck) == 1 and "partition 0" in stuck[0]


def test_moving_or_caught_up_partitions_never_stall():
    watch, clock, stuck = make_watch()
    for step in range(10):
        clock.now += 5
        watch.observe([Sample(0, 100 + step, 100 + step, 500), Sample(1, 80, 80, 80)])
        watch.check()
    assert metrics.REGISTRY.get_sample_value("foresight_ready") == 1  # kept without a probe
    assert watch.readiness()[0] and stuck == []


def test_a_silent_event_loop_is_not_ready_and_then_gives_up():
    watch, clock, stuck = make_watch()
    watch.observe([Sample(0, 10, 10, 10)])
    clock.now += 11
    ok, body = watch.readiness()
    assert not ok and "event loop has not sampled" in body["status"]
    clock.now += 10
    watch.check()
    assert len(stuck) == 1


def test_recovery_runs_no_stall_clock():
    watch, clock, stuck = make_watch()
    watch.observe([Sample(0, 0, 0, 1000)])
    for _ in range(10):
        clock.now += 5
        watch.starting("recovering tables")
        watch.check()
    assert stuck == [] and watch.readiness()[1]["status"] == "recovering tables"
    watch.observe([Sample(0, 0, 0, 1000)])
    assert watch.readiness()[0]  # the clock restarted when recovery ended


def test_waiting_for_a_first_model_is_not_stuck():
    watch, clock, stuck = make_watch(loaded=False)
    watch.observe([Sample(0, 0, 0, 1000)])
    clock.now += 100
    watch.check()
    assert stuck == []
    assert watch.health() == (False, {"status": "no model loaded"})
    assert "no model loaded" in watch.readiness()[1]["status"]


def test_a_revoked_partition_leaves_the_watch_and_its_gauges():
    watch, clock, _ = make_watch()
    watch.observe([Sample(7, 0, 0, 1000)])
    clock.now += 20
    watch.observe([Sample(8, 5, 5, 5)])
    assert watch.readiness()[0]
    assert (
        metrics.REGISTRY.get_sample_value("foresight_partition_stalled", {"partition": "7"}) is None
    )


def _get(app, path: str) -> tuple[str, bytes]:
    answer = {}

    def start_response(status, headers):
        answer["status"] = status

    body = b"".join(
        app(
            {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}, start_response
        )
    )
    return answer["status"], body


def test_the_http_app_answers_probes_and_metrics():
    watch, _, _ = make_watch()
    app = health.health_app(watch)
    status, body = _get(app, "/readyz")
    assert status.startswith("503") and orjson.loads(body)["status"] == "waiting for partitions"
    watch.observe([Sample(0, 3, 3, 3)])
    status, body = _get(app, "/readyz")
    assert status.startswith("200") and orjson.loads(body) == {"status": "ok", "lag": {"0": 0}}
    assert _get(app, "/healthz")[0].startswith("200")
    status, body = _get(app, "/metrics")
    assert status.startswith("200") and b"foresight_partition_stall_seconds" in body


def test_the_lag_gauge_follows_the_assignment():
    watch, _, _ = make_watch()

    def lag(partition: int) -> float | None:
        return metrics.REGISTRY.get_sample_value(
            "foresight_consumer_lag", {"partition": str(partition)}
        )

    watch.observe([Sample(10, 2, 5, 9), Sample(11, 3, 3, 3)])
    assert (lag(10), lag(11)) == (4.0, 0.0)  # highwater - fetch position
    watch.observe([Sample(11, 3, 3, 7)])  # partition 10 went to another worker
    assert (lag(10), lag(11)) == (None, 4.0)
