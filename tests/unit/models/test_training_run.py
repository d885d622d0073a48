"""A complete small training run on a 200-user slice of MovieLens-100K, through the CLI."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from models import registry
from tests.support.helpers import ML100K
from workers.cli import main


def test_train_cli_on_movielens_slice(tmp_path: Path) -> None:
    assert (ML100K / "u.data").exists(), f"MovieLens-100K expected at {ML100K}"
    reg = tmp_path / "registry"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            f"ml100k:{ML100K}",
            "--users",
            "200",
            "--epochs",
            "3",
            "--registry",
            str(reg),
            "--cold-start",
            "0.1",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    [version] = registry.versions(reg)
    assert registry.current(reg) == version  # first model: the gate promotes it
    report = orjson.loads((reg / version / "report.json").read_bytes())
    assert report["data"]["users"] == 200
    assert set(report["metrics"]) >= {"hr@1", "hr@10", "hr@20", "ndcg@10"}
    assert 0.0 < report["metrics"]["hr@20"] <= 1.0
    assert set(report["baselines"]) == {"most_popular", "markov"}
    cold = report["cold_start"]
    assert cold["users"] > 0 and "ndcg@10" in cold["text_baseline"]
    # the hidden items' vectors computed as the worker computes a catalog item's: same metrics
    served = cold["through_catalog"]
    assert served["items"] > 0 and served["max_abs_diff"] < 1e-3
    for metric in ("hr@10", "ndcg@10"):
        assert abs(served[metric] - cold[metric]) <= 1e-3, (metric, served, cold)
    manifest = registry.manifest(reg, version)
    assert manifest["text_encoder"]["parity_max_abs_diff"] < 1e-3
    assert report["seed"] == 1 and report["train_seconds"] > 0
    assert report["gate"]["promoted"] is True
    assert (reg / version / "report.png").stat().st_size > 1000
    assert "NDCG@10" in result.output
    registry.verify(reg, version)
