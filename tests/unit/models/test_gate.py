"""The refresher's regression gate: a worse candidate is never promoted."""

from __future__ import annotations

from pathlib import Path

from models import registry
from models.pipeline import refresh_once
from tests.support.helpers import synthetic_history, tiny_config


def test_gate_promotes_better_and_refuses_worse(tmp_path: Path) -> None:
    history = synthetic_history(users=60, items=30, length=14)
    first = refresh_once(history, tmp_path, tiny_config(epochs=8, hidden=32), None)
    assert first["report"]["gate"]["promoted"] is True
    assert registry.current(tmp_path) == first["version"]

    untrained = refresh_once(history, tmp_path, tiny_config(epochs=1, lr=0.0, hidden=32), None)
    gate = untrained["report"]["gate"]
    assert gate["promoted"] is False and gate["candidate"] < gate["current"]
    assert registry.current(tmp_path) == first["version"]  # the working model keeps serving
    assert len(registry.versions(tmp_path)) == 2  # the refused version stays for inspection
