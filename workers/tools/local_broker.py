"""A real single-node Apache Kafka (KRaft) for development, tests, the demo and benchmarks.

There is no Docker here, so the broker runs from the jars Maven resolves for
``deploy/kafka/pom.xml``: fetched once into a cache, storage formatted once, then started as a
detached JVM whose pid is kept beside its data so ``stop`` never leaves an orphan.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.0.1"
POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(
            f"`{tool}` is not installed. Install {package} (Debian: apt-get install {package}), "
            "or run Kafka with `docker compose -f deploy/compose.yaml up kafka` and point "
            "FORESIGHT_BROKER at it."
        )
    return path


def fetch_jars(cache: Path) -> Path:
    """The Kafka classpath directory, resolved from Maven Central on first use (shows progress)."""
    lib = cache / f"kafka-{KAFKA_VERSION}" / "lib"
    if any(lib.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        return lib
    mvn = _require("mvn", "maven")
    _require("java", "openjdk-17-jre-headless")
    _say(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {lib} (once)")
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=lib.parent))
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        stdout=sys.stderr,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"maven could not resolve the Kafka jars (exit {result.returncode})")
    if lib.exists():
        shutil.rmtree(lib)
    staging.rename(lib)
    _say(f"{len(list(lib.glob('*.jar')))} jars ready")
    return lib


async def _answers_metadata(bootstrap: str, timeout: float) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return True
    except Exception:
        return False
    finally:
        await client.close()


def answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    host, _, port = bootstrap.rpartition(":")
    try:  # a cheap port check first keeps aiokafka from logging connection errors
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return asyncio.run(_answers_metadata(bootstrap, timeout))


@dataclass
class LocalBroker:
    """One local broker: its ports, its state directory (data, log, pid) and the jar cache."""

    port: int
    state_dir: Path
    jar_cache: Path
    heap: str = "512m"

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

    def _java(self, lib: Path, main: str, *args: str, **popen: object) -> list[str]:
        java = _require("java", "openjdk-17-jre-headless")
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]

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
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> float:
        """Start (or find running) and wait until it answers; returns the seconds it took."""
        began = time.monotonic()
        if answers(self.bootstrap):  # ours from an earlier call, or someone else's: use it
            return 0.0
        lib = fetch_jars(self.jar_cache)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "server.properties"
        config.write_text(
            SERVER_PROPERTIES.format(
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.state_dir / "data",
            )
        )
        (self.state_dir / "log4j2.properties").write_text(LOG4J2)
        self._format(lib, config)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self._java(lib, "kafka.Kafka", str(config)),
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
            if answers(self.bootstrap, timeout=1.0):
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
