"""The monitor's parts without a broker: its bounded state and views, the workers' metrics
arithmetic, and the web app's read-only, escaped-by-policy surface."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.testclient import TestClient

from schemas.records import Alert, Trend
from schemas.settings import Settings
from workers.monitor.app import STATIC, Monitor
from workers.monitor.state import MonitorState, ViewQuery
from workers.monitor.worker_metrics import WorkerMetrics, histogram_quantile


def trend(key: str, window: int, volume: int = 1, sentiment: float | None = None, **extra) -> Trend:
    texts = extra.pop("texts", [])
    return Trend(
        key=key,
        window_start=window * 60.0,
        window_end=window * 60.0 + 60,
        volume=volume,
        engagement={"purchase": 0},
        conversion=0.0,
        sentiment_mean=sentiment,
        sentiment_count=0 if sentiment is None else 1,
        sentiment_change=None,
        sentiment_texts=texts,
        volume_change=0.0,
        zscore=extra.pop("zscore", 0.0),
    )


def alert(user: str, kind: str = "fraud_risk", n: int = 0) -> Alert:
    return Alert(
        alert_id=f"a{user}{n}",
        event_id=f"e{n}",
        user_id=user,
        kind=kind,
        score=0.9,
        threshold=0.5,
        reasons=[{"event_id": f"e{n}", "type": "payment", "ts": 1.0e9, "price": 1.0}],
        model_version="v1",
        ts=1.0e9 + n,
    )


def test_state_keeps_one_copy_per_window_and_bounds_keys_and_history() -> None:
    state = MonitorState(max_keys=3, history=4)
    for window in range(6):
        state.add_trend(trend("item:a", window, volume=window))
    state.add_trend(trend("item:a", 5, volume=50))  # a re-sent window: the newer copy wins
    for key in ("item:b", "item:c", "item:d"):
        state.add_trend(trend(key, 0))
    assert list(state.keys) == ["item:b", "item:c", "item:d"]  # a was least recently updated
    state.add_trend(trend("item:b", 1))
    state.add_trend(trend("item:e", 0))
    assert list(state.keys) == ["item:d", "item:b", "item:e"]
    again = MonitorState(history=4)
    for window in range(6):
        again.add_trend(trend("item:a", window, volume=window))
    again.add_trend(trend("item:a", 5, volume=50))
    selected = again.view(ViewQuery(key="item:a"))["selected"]
    assert [p["volume"] for p in selected["points"]] == [2, 3, 4, 50]


def test_trend_view_filters_sorts_and_keeps_missing_values_last() -> None:
    state = MonitorState()
    state.add_trend(trend("item:x1", 0, volume=5, sentiment=0.5))
    state.add_trend(trend("item:x2", 0, volume=9, sentiment=None))
    state.add_trend(trend("item:y", 0, volume=1, sentiment=-0.5))
    state.add_trend(trend("category:X-files", 0, volume=7, sentiment=0.9))

    def keys(**q) -> list[str]:
        return [r["key"] for r in state.view(ViewQuery(**q))["trends"]["rows"]]

    assert keys(sort="volume") == ["item:x2", "category:X-files", "item:x1", "item:y"]
    assert keys(sort="sentiment_mean") == ["category:X-files", "item:x1", "item:y", "item:x2"]
    assert keys(sort="sentiment_mean", desc=False)[-1] == "item:x2"  # missing: last both ways
    assert keys(kind="item", sort="volume") == ["item:x2", "item:x1", "item:y"]
    assert keys(q="x", sort="key", desc=False) == ["category:X-files", "item:x1", "item:x2"]
    view = state.view(ViewQuery(rows=2, sort="volume"))["trends"]
    assert view["total"] == 4 and len(view["rows"]) == 2
    assert view["rows"][0]["spark_volume"] == [9]


def test_texts_behind_a_key_are_kept_once_newest_first() -> None:
    state = MonitorState()
    low = {"event_id": "e1", "text": "<script>bad()</script>", "sentiment": -0.9}
    high = {"event_id": "e2", "text": "good", "sentiment": 0.8}
    state.add_trend(trend("item:a", 0, sentiment=0.1, texts=[low, high]))
    state.add_trend(trend("item:a", 0, sentiment=0.1, texts=[low, high]))  # re-sent
    texts = state.view(ViewQuery(key="item:a"))["selected"]["texts"]
    assert [t["event_id"] for t in texts] == ["e2", "e1"]
    assert texts[1]["text"] == "<script>bad()</script>"  # data as written; the page escapes
    assert state.view(ViewQuery(key="item:none"))["selected"] is None


def test_alert_view_filters_by_kind_and_user_newest_first() -> None:
    state = MonitorState(max_alerts=3)
    for n, (user, kind) in enumerate(
        [("ann", "fraud_risk"), ("bob", "anomaly"), ("anna", "anomaly"), ("cy", "fraud_risk")]
    ):
        state.add_alert(alert(user, kind, n))
    view = state.view(ViewQuery())["alerts"]
    assert [a["user_id"] for a in view["rows"]] == ["cy", "anna", "bob"]  # ann fell off
    assert view["counts"] == {"fraud_risk": 2, "anomaly": 2}
    assert state.view(ViewQuery())["seen"]["alerts"] == 4  # every one seen, not just those held
    assert [
        a["user_id"] for a in state.view(ViewQuery(alert_kind="anomaly"))["alerts"]["rows"]
    ] == [
        "anna",
        "bob",
    ]
    assert [a["user_id"] for a in state.view(ViewQuery(user="ANN"))["alerts"]["rows"]] == ["anna"]


def test_query_parameters_out_of_range_fall_back_to_defaults() -> None:
    q = ViewQuery.parse(
        {"kind": "users", "sort": "__class__", "rows": "many", "q": "x" * 1000, "desc": "0"}
    )
    assert (q.kind, q.sort, q.rows, len(q.q), q.desc) == ("all", "zscore", 50, 128, False)
    assert ViewQuery.parse({"rows": "100000", "alert_kind": "anomaly"}).rows == 200
    assert ViewQuery.parse({"alert_kind": "anomaly"}).alert_kind == "anomaly"


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.5: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 0.9)
    assert histogram_quantile(0.99, {0.1: 0.0, float("inf"): 10.0}) == 0.1  # beyond the last
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def _worker_page(events: int, latencies: list[float], lag: dict[str, int], version: str) -> str:
    """A worker's /metrics page as prometheus_client writes it."""
    registry = CollectorRegistry()
    Counter("foresight_events_in_total", "", registry=registry).inc(events)
    Counter("foresight_events_scored_total", "", registry=registry).inc(events)
    Counter("foresight_dlq_total", "", ["stage"], registry=registry).labels("decode").inc(1)
    e2e = Histogram("foresight_end_to_end_seconds", "", buckets=(0.01, 0.1, 1), registry=registry)
    for value in latencies:
        e2e.observe(value)
    gauge = Gauge("foresight_consumer_lag", "", ["partition"], registry=registry)
    for partition, n in lag.items():
        gauge.labels(partition).set(n)
    Gauge("foresight_model_info", "", ["version"], registry=registry).labels(version).set(1)
    return generate_latest(registry).decode()


def test_worker_metrics_sum_workers_and_rate_over_the_span() -> None:
    metrics = WorkerMetrics(["http://a/metrics", "http://b/metrics"], span=5)
    metrics.record(
        {
            "http://a/metrics": _worker_page(100, [0.005] * 10, {"0": 3}, "v1"),
            "http://b/metrics": _worker_page(50, [], {"1": 4}, "v1"),
        },
        at=100.0,
    )
    first = metrics.current
    assert (
        first["in_rate"] is None and first["lag_total"] == 7 and first["model_versions"] == ["v1"]
    )
    metrics.record(
        {
            "http://a/metrics": _worker_page(600, [0.005] * 10 + [0.05] * 100, {"0": 1}, "v2"),
            "http://b/metrics": OSError("connection refused"),
        },
        at=110.0,
    )
    s = metrics.current
    assert s["in_rate"] == pytest.approx((600 - 150) / 10)  # b's counts are gone from the sum
    assert s["workers_up"] == 1 and "connection refused" in s["errors"]["http://b/metrics"]
    assert s["e2e_p50_ms"] == pytest.approx(10 + 90 * 0.5)  # the new 100 all in (10, 100] ms
    assert s["lag"] == {"0": 1} and s["model_versions"] == ["v2"]
    metrics.record({"http://a/metrics": OSError("x"), "http://b/metrics": OSError("y")}, at=111.0)
    assert len(metrics.scrapes) == 2  # nobody answered: no figures rather than zeros


def test_worker_metrics_counter_reset_counts_from_zero() -> None:
    metrics = WorkerMetrics(["u"], span=1)
    metrics.record({"u": _worker_page(1000, [], {}, "v")}, at=0.0)
    metrics.record({"u": _worker_page(20, [], {}, "v")}, at=2.0)  # the worker restarted
    assert metrics.current["in_rate"] == pytest.approx(10.0)


@pytest.fixture
def client() -> TestClient:
    monitor = Monitor(Settings(metrics_port=0), ["http://127.0.0.1:1/metrics"])
    monitor.state.add_trend(trend("item:<b>x</b>", 0, sentiment=0.2))
    return TestClient(monitor.app())  # no `with`: the feeds (broker, scrapes) stay off


def test_app_serves_the_page_and_its_data_read_only(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "Foresight monitor" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    view = client.get("/api/view", params={"sort": "volume"}).json()
    assert view["trends"]["rows"][0]["key"] == "item:<b>x</b>"
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200
    assert "content-security-policy" in client.get("/static/monitor.js").headers
    for path in ("/", "/api/view", "/stream", "/static/monitor.js"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert client.request(method, path).status_code == 405, (method, path)


def test_page_loads_nothing_from_elsewhere_and_writes_values_as_text() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    js = (STATIC / "monitor.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", js)


def test_vendored_chart_library_is_the_recorded_release() -> None:
    vendor = STATIC / "vendor"
    record = orjson.loads((vendor / "VENDORED.json").read_bytes())
    for name, digest in record["files"].items():
        assert f"sha256:{hashlib.sha256((vendor / name).read_bytes()).hexdigest()}" == digest
    assert Path(vendor / "uPlot.LICENSE").read_text().startswith("The MIT License")
