"""The worker's architecture, held by tests: rooms, one Faust shim, records pinned to schemas."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import orjson
import pytest

from schemas.internal import TrendPartial
from schemas.jsonschema import SCHEMA_DIR
from schemas.records import Event, Prediction, Trend
from workers.analytics.trends import TrendAccumulator, TrendAggregator
from workers.kafka import faust_compat
from workers.pipeline.outputs import prediction_value

REPO = Path(__file__).resolve().parents[3]
WORKERS = REPO / "workers"
# os._exit is documented stdlib API: the worker's exit that must not wait, and the scoring
# process's quiet exit when the worker is gone (its broken stdout cannot be flushed)
ALLOWED_PRIVATE = {("workers/shutdown.py", "os._exit"), ("workers/scoring/child.py", "os._exit")}


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "tools" not in p.relative_to(root).parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_installed_faust_is_one_the_shim_was_checked_against() -> None:
    faust_compat.check_versions()


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"faust-streaming": "0.16.0", "mode-streaming": "0.7.1"}, "faust-streaming 0.16.0"),
        ({"faust-streaming": "0.15.3", "mode-streaming": "0.3.0"}, "mode-streaming 0.3.0"),
        ({"mode-streaming": "0.7.1"}, "faust-streaming is not installed"),
    ],
)
def test_a_faust_outside_the_checked_range_is_refused_clearly(
    installed: dict[str, str], expected: str
) -> None:
    with pytest.raises(faust_compat.IncompatibleFaust) as refused:
        faust_compat.check_versions(installed)
    assert expected in str(refused.value)
    assert "workers/kafka/faust_compat.py" in str(refused.value)


def test_private_attributes_of_libraries_are_reached_only_in_the_shim() -> None:
    found = []
    for path in _modules(WORKERS):
        name = str(path.relative_to(REPO))
        if name == "workers/kafka/faust_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not re.match(r"_[a-z]", node.attr):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue  # our own objects' state
            if (name, ast.unparse(node)) not in ALLOWED_PRIVATE:
                found.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert found == [], "private attributes belong in workers/kafka/faust_compat.py"


def test_nothing_in_the_worker_imports_the_tools() -> None:
    importers = [
        str(path.relative_to(REPO))
        for path in _modules(WORKERS)
        if path.name != "cli.py" and any(m.startswith("workers.tools") for m in _imports(path))
    ]
    assert importers == []


def test_the_trainer_package_holds_no_faust_app() -> None:
    users = [p.name for p in (REPO / "models").rglob("*.py") if "faust" in _imports(p)]
    assert users == []


@pytest.mark.parametrize(
    "dockerfile", ["Dockerfile.worker", "Dockerfile.worker-gpu", "Dockerfile.trainer"]
)
def test_images_install_every_worker_room_but_the_tools(dockerfile: str) -> None:
    """Every room, present or future, goes in; the tools are removed before the install
    (tests/e2e/test_worker_image_contents.py runs what the worker images install)."""
    text = (REPO / "deploy" / dockerfile).read_text()
    assert "\nCOPY workers workers\n" in text
    assert "RUN rm -rf workers/tools && /opt/foresight/bin/pip install --no-deps ." in text


def _schema_properties(name: str) -> set[str]:
    return set(orjson.loads((SCHEMA_DIR / f"{name}.schema.json").read_bytes())["properties"])


def test_the_prediction_builder_writes_exactly_the_schema() -> None:
    event = Event.model_validate(
        {"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1_700_000_000, "item_id": "i"}
    )
    value = prediction_value(
        event, "v1", b'{"view":1.0}', b'[{"item_id":"i","score":0.5}]', 0.1, 0.2, -0.4, 3, 12.0
    )
    assert set(orjson.loads(value)) == _schema_properties("prediction")
    prediction = Prediction.model_validate_json(value)
    assert prediction.sequence_length == 3 and prediction.next_action == {"view": 1.0}
    assert [(t.item_id, t.score) for t in prediction.top_items] == [("i", 0.5)]


def test_trends_are_written_exactly_as_their_schema() -> None:
    agg = TrendAggregator(60)
    parts = TrendAccumulator(60)
    parts.add("i", "toys", "review", 1_700_000_000.0, 0.5, "e1", "good")
    for partial in parts.drain():
        agg.add(partial)
    closed = agg.close(1_700_000_200.0)  # past the first window and its grace
    assert sorted(t["key"] for t in closed) == ["category:toys", "item:i"]
    for trend in closed:
        assert set(trend) == _schema_properties("trend")
        assert Trend.model_validate_json(orjson.dumps(trend)).sentiment_mean == 0.5


def test_trend_partials_are_written_exactly_as_their_schema() -> None:
    parts = TrendAccumulator(60)
    parts.add("i", "toys", "view", 1_700_000_000.0, 0.5)
    for partial in parts.drain():
        assert set(partial) == _schema_properties("trend_partial")
        assert TrendPartial.model_validate_json(orjson.dumps(partial)).volume == 1
