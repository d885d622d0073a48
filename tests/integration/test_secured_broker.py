"""The worker against a secured broker (SASL_SSL + SCRAM-SHA-512, TLS, ACLs): the wrong password
is refused with a clear error, the right one works, and a topic the ACLs deny gives a clear
error and loses no event."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.settings import Settings
from tests.conftest import _free_port_pair
from tests.support.acls import allow_again, deny_write
from tests.support.worker_harness import (
    WorkerProcess,
    assert_every_event_scored,
    keyed,
    produce,
    valid_events,
)
from workers.kafka.publisher import EXIT_CANNOT_PUBLISH
from workers.kafka.topics import create_topics
from workers.tools.secure_broker import ADMIN, SecureLocalBroker
from workers.tools.worker_processes import settings_env

PASSWORD = "right-password"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureLocalBroker]:
    broker = SecureLocalBroker(
        port=_free_port_pair(),
        state_dir=tmp_path_factory.mktemp("secure-kafka"),
        jar_cache=Settings().home,
        users={"foresight": PASSWORD},
    )
    broker.start()
    yield broker
    broker.stop()


def as_user(broker: SecureLocalBroker, served: Settings, password: str, **extra) -> Settings:
    """``served`` (its registry, prefix and group) pointed at the secured broker."""
    keep = ("topic_prefix", "app_id", "store", "registry", "data_dir", "partitions")
    return broker.client_settings(
        "foresight", password, metrics_port=0, **{k: getattr(served, k) for k in keep}, **extra
    )


def cli(settings: Settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wrong_password_is_refused_clearly(secure_kafka, served: Settings, tmp_path: Path):
    wrong = as_user(secure_kafka, served, "wrong-password")
    expected = (
        f"Error: cannot use the Kafka cluster at kafka://{secure_kafka.bootstrap} over SASL_SSL: "
        f"{secure_kafka.bootstrap} refused user 'foresight' (SCRAM-SHA-512): wrong user name or "
        "password (FORESIGHT_SASL_USERNAME, FORESIGHT_SASL_PASSWORD)"
    )
    listed = cli(wrong, "topics", "list")
    assert listed.returncode == 1 and listed.stderr.strip().endswith(expected), listed.stderr
    assert "Traceback" not in listed.stderr
    worker = WorkerProcess(wrong, tmp_path / "w.log").start()
    assert worker.proc is not None
    assert worker.proc.wait(90) == 1
    assert expected in worker.tail() and "Traceback" not in worker.tail()
    untrusted = as_user(secure_kafka, served, PASSWORD).model_copy(update={"ssl_cafile": None})
    refused = cli(untrusted, "topics", "list")
    assert refused.returncode == 1 and "TLS certificate is not trusted" in refused.stderr


async def test_right_password_works(secure_kafka, served: Settings, tmp_path: Path):
    s = as_user(secure_kafka, served, PASSWORD)
    await create_topics(s)
    events = valid_events(500, users=50, seed=41)
    await produce(s, s.topic("events"), keyed(events))
    worker = WorkerProcess(s, tmp_path / "w.log").start()
    try:
        await assert_every_event_scored(s, events, [worker], timeout=120)
    finally:
        worker.stop()


async def test_a_denied_output_topic_is_a_clear_error_and_loses_nothing(
    secure_kafka, served: Settings, tmp_path: Path
):
    s = as_user(secure_kafka, served, PASSWORD, publish_timeout_seconds=5)
    admin = secure_kafka.client_settings(ADMIN, secure_kafka.admin_password)
    await create_topics(s)
    await deny_write(admin, s.topic("predictions"), "foresight")
    events = valid_events(300, users=30, seed=42)
    await produce(s, s.topic("events"), keyed(events))
    worker = WorkerProcess(s, tmp_path / "w1.log").start()
    assert worker.proc is not None
    try:
        code = worker.proc.wait(120)
    finally:
        worker.stop()
    assert code == EXIT_CANNOT_PUBLISH, worker.tail()
    assert "does not authorize this worker's user to write an output" in worker.tail()
    assert s.topic("predictions") in worker.tail()

    await allow_again(admin, s.topic("predictions"), "foresight")
    successor = WorkerProcess(s, tmp_path / "w2.log").start()
    try:
        await assert_every_event_scored(s, events, [successor], timeout=120)
    finally:
        successor.stop()
