"""Real worker processes and real topic I/O for the integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.kafka_security import aiokafka_kwargs
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings, **extra: object) -> dict[str, str]:
    """The FORESIGHT_* environment that reproduces ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORESIGHT_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"FORESIGHT_{name.upper()}"] = str(value)
    env.update({f"FORESIGHT_{k.upper()}": str(v) for k, v in extra.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """``foresight worker`` as a child process, with its log in a file."""

    def __init__(self, settings: Settings, log: Path, **extra: object) -> None:
        self.env = settings_env(settings, **extra)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        handle = open(self.log, "ab")  # the child keeps it; closed when it exits
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--loglevel", "warning"],
            cwd=REPO,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


async def produce(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    rate: float | None = None,
) -> None:
    """Send (key, value) pairs and wait until the broker has every one."""
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings), acks="all", linger_ms=5, enable_idempotence=True
    )
    await producer.start()
    try:
        futures, began = [], time.monotonic()
        for i, (key, value) in enumerate(records):
            futures.append(await producer.send(topic, value, key=key))
            if rate and i % 100 == 99:
                await asyncio.sleep(max(0.0, began + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning, accumulating every record seen so far."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.records: list = []
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self.consumer = AIOKafkaConsumer(
            self.topic,
            **aiokafka_kwargs(self.settings),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.consumer is not None
        await self.consumer.stop()

    async def poll(self) -> None:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=500)
        for records in batch.values():
            self.records.extend(records)

    async def until(
        self,
        done: Callable[[list], bool],
        timeout: float,
        workers: list[WorkerProcess] | None = None,
    ) -> list:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                logs = "\n".join(w.tail() for w in workers or [])
                raise AssertionError(
                    f"{self.topic}: timed out with {len(self.records)} records\n{logs}"
                )
            for w in workers or []:
                if not w.alive():
                    raise AssertionError(f"worker died:\n{w.tail()}")
            await self.poll()
        return self.records


async def read_all(settings: Settings, topic: str, idle: float = 2.0) -> list:
    """Every record currently in ``topic`` (stops after ``idle`` seconds without news)."""
    async with TopicReader(settings, topic) as reader:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            before = len(reader.records)
            await reader.poll()
            if len(reader.records) > before:
                quiet_since = time.monotonic()
        return reader.records
