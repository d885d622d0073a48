"""What the worker images install, run for real: a virtual environment built exactly as
deploy/Dockerfile.worker builds /opt/foresight (the hashed CPU lock, then the package without
workers/tools) serves a model against the real broker, with no torch and no dev tooling.
(No Docker engine here: this checks the image's Python content, not its OS layers.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from schemas.settings import Settings
from tests.conftest import _free_port_pair
from tests.support.processes import probe, wait_for
from tests.support.worker_harness import TopicReader, event_ids, keyed, produce, valid_events
from workers.kafka.topics import create_topics
from workers.tools.worker_processes import ChildProcess, settings_env

REPO = Path(__file__).resolve().parents[2]


def image_environment(target: Path) -> Path:
    """/opt/foresight of the CPU worker image, built here with uv; returns its bin/."""
    source = target / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("schemas", "models", "workers"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(source / "workers" / "tools")  # as the Dockerfile does
    uv = [shutil.which("python3") or sys.executable, "-m", "uv"]
    venv = target / "venv"
    lock = REPO / "deploy" / "requirements" / "worker-cpu.txt"
    python = str(venv / "bin" / "python")
    for step in (
        ["venv", "--quiet", "--python", "3.11", str(venv)],
        [
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "--require-hashes",
            "--no-deps",
            "-r",
            str(lock),
        ],
        ["pip", "install", "--quiet", "--python", python, "--no-deps", str(source)],
    ):
        done = subprocess.run([*uv, *step], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    return venv / "bin"


async def test_the_cpu_image_environment_serves_a_model(served: Settings, tmp_path: Path) -> None:
    bin_dir = image_environment(tmp_path / "image")
    python = str(bin_dir / "python")
    for absent in ("torch", "transformers", "pytest", "workers.tools"):
        found = subprocess.run(
            [python, "-c", f"import {absent}"], capture_output=True, cwd=tmp_path
        )
        assert found.returncode != 0, f"{absent} is in the worker image"
    providers = subprocess.run(
        [python, "-c", "import onnxruntime; print(onnxruntime.get_available_providers())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "CPUExecutionProvider" in providers.stdout  # the CPU build: no CUDA kernels shipped
    assert "CUDAExecutionProvider" not in providers.stdout
    s = served
    port = _free_port_pair()
    await create_topics(s)
    events = valid_events(500, users=50, seed=21)
    env = settings_env(s, metrics_port=port)
    worker = ChildProcess(  # the image's entry point, outside the repository
        ["worker", "--loglevel", "warning"],
        env,
        tmp_path / "worker.log",
        launcher=[str(bin_dir / "foresight")],
        cwd=tmp_path,
    ).start()
    try:
        await produce(s, s.topic("events"), keyed(events))
        async with TopicReader(s, s.topic("predictions")) as preds:
            await preds.until(lambda r: len(event_ids(r)) >= len(events), 120, [worker])
        await wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "/readyz 200")
    finally:
        worker.stop()
    assert event_ids(preds.records) == {e["event_id"] for e in events}
