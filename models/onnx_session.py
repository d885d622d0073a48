"""What every ONNX graph of an artifact goes through: the graph check, the session on the best
provider this machine has, and the refusal that says why a graph must not serve.

Importable without torch; shared by the sequence model (models/runtime.py) and the language-model
graphs (models/text_runtime.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ALLOWED_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelRefused(RuntimeError):
    """An artifact that must not serve; the message says why."""


def check_graph(path: Path) -> None:
    """Refuse a graph that does not parse, keeps external data, or uses custom operators."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelRefused(f"{path.name} does not parse: {exc}") from None
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ModelRefused(f"{path.name} keeps weights in external data files; single file only")
    domains = {op.domain for op in model.opset_import} | {n.domain for n in model.graph.node}
    custom = domains - ALLOWED_DOMAINS
    if custom or model.functions:
        raise ModelRefused(f"{path.name} uses custom operators or functions: {sorted(custom)}")


def signature(items) -> dict[str, tuple[str, int]]:
    return {x.name: (x.type, len(x.shape)) for x in items}


def gpu_present() -> bool:
    """An NVIDIA device node or driver exists (onnxruntime-gpu lists its GPU providers even on
    machines without one, and then fails noisily when asked to use them)."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


def providers_available() -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if not gpu_present():
        available &= {"CPUExecutionProvider"}
    return [p for p in PREFERRED_PROVIDERS if p in available]


def session_on(path: Path, provider: str, threads: int | None = None):
    """An onnxruntime session whose first provider is ``provider`` (the CPU behind a GPU one,
    for nodes it lacks); raises ``RuntimeError`` with the reason when there can be none."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    chain = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), options, providers=chain)
    except Exception as exc:  # e.g. CUDA libraries present but no GPU
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"fell back to {session.get_providers()[0]}")
    return session


def session_for(path: Path, threads: int | None):
    """An onnxruntime session on the best provider that works here (GPU first)."""
    for provider in providers_available():
        try:
            return session_on(path, provider, threads), provider
        except RuntimeError as exc:
            log.info("provider %s unavailable: %s", provider, exc)
    raise ModelRefused("onnxruntime could not create a session on any provider")


def checked_session(path: Path, inputs: dict, outputs: dict, threads: int | None):
    """(session, provider) for a graph that passes :func:`check_graph` and whose signature is
    exactly ``inputs`` and ``outputs`` (name → (ONNX type, rank)); else ModelRefused."""
    check_graph(path)
    session, provider = session_for(path, threads)
    got_in, got_out = signature(session.get_inputs()), signature(session.get_outputs())
    if got_in != inputs or got_out != outputs:
        raise ModelRefused(f"{path.name} signature mismatch: inputs {got_in}, outputs {got_out}")
    return session, provider
