"""The local broker launcher and topic management, against the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import TOPIC_BASES, Settings
from workers.kafka.topics import create_topics, delete_run_topics, list_topics
from workers.tools.bench import BROKER_STAMPED
from workers.tools.local_broker import LocalBroker, answers


def test_broker_answers_metadata(kafka: LocalBroker) -> None:
    assert kafka.pid() is not None
    assert answers(kafka.bootstrap)


def test_broker_start_is_idempotent(kafka: LocalBroker) -> None:
    pid = kafka.pid()
    assert kafka.start() == 0.0  # already running: returns at once
    assert kafka.pid() == pid


async def test_topics_created_idempotently_with_shapes(settings: Settings) -> None:
    first = await create_topics(settings)
    assert set(first.values()) == {"created"}
    assert len(first) == len(TOPIC_BASES)
    second = await create_topics(settings)
    assert set(second.values()) == {"exists"}

    listed = await list_topics(settings)
    assert listed[settings.topic("events")] == settings.partitions
    assert listed[settings.topic("models.control")] == 1

    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        [resp] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topic("models.control"))]
        )
        configs = {entry[0]: entry[1] for entry in resp.resources[0][4]}
        assert configs["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_a_topic_created_with_extra_config_is_stamped_by_the_broker(
    settings: Settings,
) -> None:
    """The bench's latency runs create their predictions topic so (BROKER_STAMPED): a record's
    timestamp is then the time the broker appended it, not the one its producer gave it."""
    await create_topics(settings, BROKER_STAMPED)
    topic = settings.topic("predictions")
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings))
    await producer.start()
    try:
        sent_after = time.time() * 1000
        await producer.send_and_wait(topic, b"x", partition=0, timestamp_ms=1_000)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(settings), auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        [record] = (await consumer.getmany(timeout_ms=10_000))[TopicPartition(topic, 0)]
    finally:
        await consumer.stop()
    assert record.timestamp_type == 1  # LogAppendTime
    assert record.timestamp >= sent_after - 1  # the broker's clock, not the producer's 1,000
    events = settings.topic("events")  # the other topics keep the producer's time
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in (topic, events)]
        )
    finally:
        await admin.close()
    types = {
        resource[3]: dict((entry[0], entry[1]) for entry in resource[4])["message.timestamp.type"]
        for response in described
        for resource in response.resources
    }
    assert types == {topic: "LogAppendTime", events: "CreateTime"}


async def test_a_deleted_run_s_files_leave_the_disk_within_seconds(
    settings: Settings, kafka: LocalBroker
) -> None:
    """The launcher's broker removes a deleted topic's files after 1 s, not Kafka's default
    60 s: the bench deletes each run's topics, and the removal a minute later landed in the
    middle of the next run's latency measurement as half a core of broker work."""
    await create_topics(settings)
    data = kafka.state_dir / "data"

    def mine() -> list[str]:  # the run's partition directories, renamed "…-delete" or not
        return [d.name for d in data.iterdir() if d.name.startswith(settings.topic_prefix)]

    assert mine()  # the partitions' directories are there to be removed
    await delete_run_topics(settings)
    deadline = time.monotonic() + 15
    while mine() and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    assert mine() == []


def test_cli_topics_create_and_list(settings: Settings) -> None:
    env = {
        **os.environ,
        "FORESIGHT_BROKER": settings.broker,
        "FORESIGHT_TOPIC_PREFIX": settings.topic_prefix,
        "FORESIGHT_BROKER_PORT": str(settings.broker_port),
    }
    cli = [sys.executable, "-m", "workers.cli"]
    created = subprocess.run([*cli, "topics", "create"], env=env, capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created") == len(TOPIC_BASES)
    listed = subprocess.run([*cli, "topics", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert f"{settings.topic('events')}" in listed.stdout
    assert "missing" not in listed.stdout
    status = subprocess.run([*cli, "broker", "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0
    assert status.stdout.strip() == f"127.0.0.1:{settings.broker_port}"


def test_stop_leaves_no_orphan(tmp_path, kafka: LocalBroker) -> None:
    """A second broker started and stopped by the launcher leaves no JVM behind."""
    from tests.conftest import _free_port_pair

    other = LocalBroker(port=_free_port_pair(), state_dir=tmp_path, jar_cache=kafka.jar_cache)
    other.start()
    pid = other.pid()
    assert pid is not None and answers(other.bootstrap)
    assert other.stop()
    assert other.pid() is None
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
