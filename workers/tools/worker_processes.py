"""Worker processes as children: for tests, the benchmark and the demo.

Each child gets its configuration only through ``FORESIGHT_*`` variables, exactly like a
deployed worker, and runs in its own process group so it can be killed with everything it owns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings, **extra: object) -> dict[str, str]:
    """The environment that reproduces ``settings`` (plus overrides) in a child process."""
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


class ChildProcess:
    """A ``python -m <module> args`` child (or ``launcher args``, run in ``cwd``) with its
    output in a log file."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log: Path,
        launcher: list[str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.args, self.env, self.log, self.cwd = args, env, log, cwd
        self.launcher = launcher or [sys.executable, "-m"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> ChildProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*self.launcher, *self.args],
                cwd=self.cwd,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def descendants(self) -> list[int]:
        """The pids of the child's own children, their children and so on (Linux)."""
        found: list[int] = []
        pids = [self.pid]
        while pids:
            pid = pids.pop()
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    children = [int(c) for c in (task / "children").read_text().split()]
                except FileNotFoundError:  # a thread that ended meanwhile
                    continue
                found += children
                pids += children
        return found

    def peak_rss_mb(self) -> float | None:
        """High-water resident memory of the child and its own children (the worker's scoring
        process holds the model), summed (Linux)."""
        total = 0.0
        try:
            for pid in [self.pid, *self.descendants()]:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024.0
        except (OSError, AssertionError):
            return total or None
        return total or None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far (Linux): ``loop``, the child's main thread (a worker's event
        loop); ``process``, all of the child's threads; ``children``, its descendants (a
        worker's scoring process)."""
        return {
            "loop": _cpu_seconds(f"/proc/{self.pid}/task/{self.pid}/stat"),
            "process": _cpu_seconds(f"/proc/{self.pid}/stat"),
            "children": sum(_cpu_seconds(f"/proc/{pid}/stat") for pid in self.descendants()),
        }

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def machine_cpu_seconds(proc_stat: str | None = None) -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, summed over its cores, from the
    first line of ``/proc/stat`` (Linux): what shares the cores with a worker, the broker and
    the load generator included. Idle and I/O wait are the not-busy part; guest time is
    already counted in user time."""
    text = proc_stat if proc_stat is not None else Path("/proc/stat").read_text()
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in text.split("\n", 1)[0].split()[1:9]
    )
    every = user + nice + system + idle + iowait + irq + softirq + steal
    tick = os.sysconf("SC_CLK_TCK")
    return (every - idle - iowait) / tick, every / tick


def _cpu_seconds(stat_path: str) -> float:
    """utime + stime of a /proc stat file, in seconds (the fields after the command name,
    which may itself hold spaces)."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerProcess(ChildProcess):
    """``foresight worker`` configured by ``settings``."""

    def __init__(
        self, settings: Settings, log: Path, loglevel: str = "warning", **extra: object
    ) -> None:
        super().__init__(
            ["workers.cli", "worker", "--loglevel", loglevel], settings_env(settings, **extra), log
        )


class MonitorProcess(ChildProcess):
    """``foresight monitor`` on ``port`` for ``settings``' topics and the given workers'
    metrics pages."""

    def __init__(self, settings: Settings, log: Path, port: int, metrics_urls: list[str]) -> None:
        args = ["workers.cli", "monitor", "--port", str(port)]
        for url in metrics_urls:
            args += ["--metrics", url]
        super().__init__(args, settings_env(settings), log)
        self.url = f"http://127.0.0.1:{port}/"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once the page answers; raise with the log's tail if it exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the monitor exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the monitor did not answer within {timeout:.0f}s:\n{self.tail()}")
