"""deploy/gpu-check.sh's measurements, run here as the CPU dry run it offers (no GPU here)."""

from __future__ import annotations

from pathlib import Path

import orjson

from workers.tools import gpu_check


def test_without_a_gpu_it_says_so_and_measures_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_check, "gpu_present", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == gpu_check.NO_GPU
    assert "no GPU here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cpu_dry_run_measures_every_batch_and_the_scoring_stage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--cpu-only", "--budget", "0.05", "--batches", "1,64,256", "--out", str(out)]
    assert gpu_check.main(args) == 0
    report = orjson.loads((out / "gpu-check.json").read_bytes())
    cpu = report["providers"]["CPUExecutionProvider"]
    assert set(cpu["batches"]) == {"1", "64", "256"}
    for t in cpu["batches"].values():
        assert 0 < t["ms_p50"] <= t["ms_p99"] and t["sequences_per_s"] > 0
    # the same provider against itself: identical outputs
    assert max(cpu["versus_cpu"]["max_abs_diff"].values()) == 0.0
    assert cpu["versus_cpu"]["top_items_equal_share"] == 1.0
    assert report["scoring_stage"]["provider"] == "CPUExecutionProvider"
    assert set(report["scoring_stage"]["sequences_per_s"]) == {"1", "64", "256"}
    assert "| CPUExecutionProvider | 256 |" in (out / "gpu-check.md").read_text()
