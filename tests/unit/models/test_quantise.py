"""The sequence model's int8 graph: quantised although a weight is shared, measured through
onnxruntime beside the fp32 graph, kept only where ranking holds, served on CPU only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest

from models import quantise, runtime
from models.contract import INT8_GRAPH, sha256_of
from models.runtime import ModelRefused, golden_batch, load_artifact, served_graph
from models.vocab import Vocab
from tests.support.helpers import tiny_model


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    reg = tmp_path_factory.mktemp("registry")
    return reg / tiny_model(reg)


@pytest.fixture
def with_int8(artifact: Path, tmp_path: Path) -> Path:
    """A copy of the artifact that offers an int8 graph, whatever its training decided."""
    copy = tmp_path / artifact.name
    shutil.copytree(artifact, copy)
    quantise.quantise_int8(copy / "model.onnx", copy / INT8_GRAPH, per_channel=False)
    manifest = orjson.loads((copy / "manifest.json").read_bytes())
    manifest["int8"] = {"sha256": sha256_of(copy / INT8_GRAPH)}
    (copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    return copy


def _run(path: Path, batch: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, batch)


def test_a_weight_shared_by_two_gemms_is_quantised_into_a_graph_that_loads(
    artifact: Path, tmp_path: Path
) -> None:
    graph = onnx.load(str(artifact / "model.onnx"))
    gemm_weights = [n.input[1] for n in graph.graph.node if n.op_type == "Gemm"]
    assert len(gemm_weights) > len(set(gemm_weights))  # the case the quantiser gets wrong
    quantise.quantise_int8(artifact / "model.onnx", tmp_path / "q.onnx", per_channel=False)
    quantised = onnx.load(str(tmp_path / "q.onnx"))
    assert any(t.data_type == onnx.TensorProto.INT8 for t in quantised.graph.initializer)
    batch = golden_batch(Vocab.load(artifact / "vocab.json", texts=False))
    fp32, int8 = _run(artifact / "model.onnx", batch), _run(tmp_path / "q.onnx", batch)
    assert np.abs(fp32[0] - int8[0]).max() < 0.05  # next-action probabilities


def test_the_report_puts_both_graphs_side_by_side_and_the_manifest_follows_it(
    artifact: Path,
) -> None:
    report = orjson.loads((artifact / "report.json").read_bytes())["int8"]
    for split in ("validation", "test"):
        assert set(report[split]) == {"fp32", "int8"}
        assert {"hr@10", "ndcg@10"} <= set(report[split]["int8"])
    # the fp32 graph through onnxruntime ranks as torch does in the training report
    torch_test = orjson.loads((artifact / "report.json").read_bytes())["metrics"]
    assert report["test"]["fp32"]["ndcg@10"] == pytest.approx(torch_test["ndcg@10"], abs=1e-6)
    drop = report["validation"]["fp32"]["ndcg@10"] - report["validation"]["int8"]["ndcg@10"]
    assert report["validation_ndcg_drop"] == pytest.approx(drop)
    assert report["served"] == (drop <= quantise.NDCG_TOLERANCE)
    manifest = orjson.loads((artifact / "manifest.json").read_bytes())
    assert ("int8" in manifest) == report["served"] == (artifact / INT8_GRAPH).is_file()


def test_an_int8_graph_that_ranks_worse_is_not_kept(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(artifact / "model.onnx", stage / "model.onnx")
    ndcg = {"model.onnx": 0.1000, INT8_GRAPH: 0.1000 - quantise.NDCG_TOLERANCE - 1e-4}
    monkeypatch.setattr(quantise, "graph_metrics", lambda path, *_: {"ndcg@10": ndcg[path.name]})
    entry, report = quantise.add_int8(stage, {"validation": [], "test": []}, 50, np.zeros((4, 2)))
    assert entry is None and report["served"] is False
    assert not (stage / INT8_GRAPH).exists()
    ndcg[INT8_GRAPH] = 0.1000 - quantise.NDCG_TOLERANCE + 1e-4
    entry, report = quantise.add_int8(stage, {"validation": [], "test": []}, 50, np.zeros((4, 2)))
    assert report["served"] is True and entry == {
        "sha256": sha256_of(stage / INT8_GRAPH),
        "validation_ndcg_drop": pytest.approx(quantise.NDCG_TOLERANCE - 1e-4),
    }


def test_int8_serves_on_cpu_unless_fp32_is_asked_for(with_int8: Path) -> None:
    loaded = load_artifact(with_int8)
    assert loaded.precision == "int8"
    batch = golden_batch(loaded.vocab)
    np.testing.assert_array_equal(loaded.run(batch)["risk"], _run(with_int8 / INT8_GRAPH, batch)[3])
    assert load_artifact(with_int8, precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        load_artifact(with_int8, precision="int4")


def test_a_gpu_serves_the_fp32_graph(with_int8: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = orjson.loads((with_int8 / "manifest.json").read_bytes())
    assert served_graph(with_int8, manifest, "auto") == (with_int8 / INT8_GRAPH, "int8")
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime, "providers_available", lambda: gpu)
    assert served_graph(with_int8, manifest, "auto") == (with_int8 / "model.onnx", "fp32")


def test_a_missing_or_tampered_int8_graph_is_refused(with_int8: Path) -> None:
    data = bytearray((with_int8 / INT8_GRAPH).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (with_int8 / INT8_GRAPH).write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match=r"int8.*sha256"):
        load_artifact(with_int8)
    (with_int8 / INT8_GRAPH).unlink()
    with pytest.raises(ModelRefused, match="missing"):
        load_artifact(with_int8)
    assert load_artifact(with_int8, precision="fp32").precision == "fp32"
