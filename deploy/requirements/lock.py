"""Regenerate the images' pinned, hashed requirements from pyproject.toml (needs uv, PyPI).

    python deploy/requirements/lock.py

worker-gpu.txt: the worker's dependencies. worker-cpu.txt: the same with onnxruntime (CPU,
~50 MB) in place of onnxruntime-gpu (~335 MB of CUDA kernels a CPU image never runs); both
provide the same `onnxruntime` module. trainer.txt: the worker's plus the `train` extra,
without torch and its CUDA packages: the trainer image installs torch from the PyTorch index
of the variant it is built for (cpu by default, or a CUDA one), so the lock holds everything
else. Both are universal (any Python >= 3.11, any platform), so the CUDA image's Python 3.12
uses the same lock.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = tomllib.loads((HERE.parents[1] / "pyproject.toml").read_text())["project"]
# torch's own pure-Python dependencies, locked here since torch itself is not
TORCH_DEPS = [
    "filelock",
    "typing-extensions",
    "sympy",
    "networkx",
    "jinja2",
    "fsspec",
    "setuptools",
]
NOT_LOCKED = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==", re.M)


def compile_lock(name: str, requirements: list[str], exclude: list[str] = ()) -> str:
    source = HERE / f"{name}.in"
    source.write_text("\n".join(requirements) + "\n")
    command = [sys.executable, "-m", "uv", "pip", "compile", source.name, "--universal"]
    command += ["--python-version", "3.11", "--generate-hashes", "--quiet", "-o", f"{name}.txt"]
    for package in exclude:
        command += ["--no-emit-package", package]
    subprocess.run(command, cwd=HERE, check=True)
    return (HERE / f"{name}.txt").read_text()


if __name__ == "__main__":
    gpu = compile_lock("worker-gpu", PROJECT["dependencies"])
    runtime = re.search(r"^onnxruntime-gpu==(\S+)", gpu, re.M)[1]  # the same version on CPU
    cpu = [
        f"onnxruntime=={runtime}" if r.startswith("onnxruntime-gpu") else r
        for r in PROJECT["dependencies"]
    ]
    compile_lock("worker-cpu", cpu)
    train = [r for r in PROJECT["optional-dependencies"]["train"] if not r.startswith("torch")]
    full = compile_lock("trainer", PROJECT["dependencies"] + train + TORCH_DEPS)
    compile_lock(
        "trainer",
        PROJECT["dependencies"] + train + TORCH_DEPS,
        sorted({m.group(1) for m in NOT_LOCKED.finditer(full)}),
    )
