"""The local broker's classpath, fetched from Maven Central by a lock file: no Maven needed.

``kafka/jars.lock.json`` names every jar of Apache Kafka's broker classpath (plus a log4j2
binding) with its repository path, size and sha256. Fetching downloads each one, checks its
digest before it is used, and shows progress; a jar that does not match is refused. The lock
is regenerated from ``kafka/pom.xml`` with Maven by ``python -m workers.tools.kafka_jars``
(maintainers only, when the Kafka version changes).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

HERE = Path(__file__).resolve().parent / "kafka"
LOCK = HERE / "jars.lock.json"
POM = HERE / "pom.xml"
CHUNK = 1 << 16


class JarFetchError(RuntimeError):
    """A jar could not be downloaded, or did not match the lock."""


def read_lock(lock: Path = LOCK) -> dict:
    return orjson.loads(lock.read_bytes())


def is_complete(lib: Path, lock: dict) -> bool:
    """True when ``lib`` holds every locked jar at its locked size (digests were checked when
    they were fetched; the directory only appears once all of them passed)."""
    return all(
        (lib / jar["file"]).is_file() and (lib / jar["file"]).stat().st_size == jar["size"]
        for jar in lock["jars"]
    )


def _download(url: str, target: Path, expected_sha256: str, progress: Progress, task) -> None:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                progress.advance(task, len(chunk))
    except OSError as exc:
        raise JarFetchError(f"could not download {url}: {exc}") from exc
    if digest.hexdigest() != expected_sha256:
        raise JarFetchError(
            f"{url} has sha256 {digest.hexdigest()}, the lock says {expected_sha256}: refused"
        )


def fetch(lib: Path, repository: str, lock: dict | None = None) -> Path:
    """Download every locked jar from ``repository`` (a Maven repository URL) into ``lib``,
    each checked against its sha256; ``lib`` appears only when all are in."""
    lock = lock or read_lock()
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=lib.parent))
    total = sum(jar["size"] for jar in lock["jars"])
    columns = (TextColumn("[broker] {task.description}"), BarColumn(), DownloadColumn())
    try:
        with Progress(*columns, TransferSpeedColumn(), transient=False) as progress:
            task = progress.add_task(f"{len(lock['jars'])} Kafka jars", total=total)
            for jar in lock["jars"]:
                url = f"{repository.rstrip('/')}/{jar['path']}"
                _download(url, staging / jar["file"], jar["sha256"], progress, task)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if lib.exists():
        shutil.rmtree(lib)
    staging.rename(lib)
    return lib


def lock_from_maven(pom: Path = POM, lock: Path = LOCK) -> dict:
    """Resolve ``pom``'s runtime classpath with Maven and write the lock (maintainers only)."""
    listing = Path(tempfile.mkdtemp()) / "deps.txt"
    subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:list",
            "-DincludeScope=runtime",
            "-DoutputAbsoluteArtifactFilename=true",
            f"-DoutputFile={listing}",
        ],
        check=True,
    )
    jars: list[dict[str, Any]] = []
    for line in listing.read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) < 6 or not parts[-1].endswith(".jar"):
            continue
        file = Path(parts[-1])
        repository_path = file.relative_to(Path.home() / ".m2" / "repository")
        jars.append(
            {
                "coordinates": ":".join(parts[:-2]),
                "file": file.name,
                "path": str(repository_path),
                "size": file.stat().st_size,
                "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
            }
        )
    jars.sort(key=lambda jar: jar["path"])
    version = next(
        j["coordinates"].split(":")[-1] for j in jars if ":kafka_2.13:" in j["coordinates"]
    )
    result = {"kafka_version": version, "jars": jars}
    lock.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return result


if __name__ == "__main__":
    written = lock_from_maven()
    print(f"{LOCK}: Kafka {written['kafka_version']}, {len(written['jars'])} jars", file=sys.stderr)
