"""Shared fixtures: one real Kafka broker per test session, unique topic names per test.

The broker is the launcher's own (``workers.tools.local_broker``) on free ports with a throwaway
state directory. If it cannot start, every integration test fails: nothing here skips.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import registry
from schemas.settings import Settings
from tests.support.helpers import synthetic_history, tiny_config, tiny_sentiment
from workers.tools.local_broker import LocalBroker


def _free_port_pair() -> int:
    """A port p with p and p+1 both free (broker and controller listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real Apache Kafka broker for the whole session, stopped at the end."""
    broker = LocalBroker(
        port=_free_port_pair(),
        state_dir=tmp_path_factory.mktemp("kafka"),
        jar_cache=Settings().home,
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def settings(kafka: LocalBroker, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker with a topic prefix unique to this test."""
    return Settings(
        broker=f"kafka://{kafka.bootstrap}",
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        app_id=f"test-{uuid.uuid4().hex[:10]}",
        store="memory://",
        partitions=4,
        registry=tmp_path / "registry",
        data_dir=tmp_path / "state",
        broker_port=kafka.port,
        metrics_port=0,
    )


@pytest.fixture(scope="session", autouse=True)
def sentiment_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One sentiment fit cache for the session (and the workers it starts): the tiny sentiment
    model is fitted once and reused by every artifact trained in the tests."""
    cache = tmp_path_factory.mktemp("foresight-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORESIGHT_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture
def served(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A tiny trained model, with a tiny sentiment model, promoted in this test's registry."""
    from models.pipeline import train_and_register

    sentences = tmp_path_factory.getbasetemp() / "sentences"
    version, _ = train_and_register(
        synthetic_history(),
        settings.registry,
        tiny_config(),
        cold_start_share=None,
        sentiment=tiny_sentiment(sentences),
    )
    registry.mark_current(settings.registry, version)
    return settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/e2e is marked ``integration``."""
    for item in items:
        if "/integration/" in str(item.fspath) or "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
