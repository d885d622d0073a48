"""Export parity, and the runtime loader refusing anything not exactly right."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import orjson
import pytest
import torch

from models import registry
from models.contract import OUTPUTS, sha256_of
from models.export import ExportError, check_top_items, export_onnx, onnx_bytes, parity
from models.features import pad_batch
from models.item_index import IndexConfig, build_index, save_index
from models.network import NetworkConfig, SequenceTransformer, exportable_logsumexp
from models.runtime import ModelRefused, golden_batch, load_artifact
from models.vocab import Vocab
from tests.support.helpers import tiny_model
from workers.pipeline.sequence import SeqEvent, UserSequence
from workers.scoring.process import RemoteScorer, ScoringFailed, ScoringProcess
from workers.scoring.scorer import LENGTH_GROUP, OnnxScorer, scores_from
from workers.tools import bench


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    reg = tmp_path_factory.mktemp("registry")
    return reg / tiny_model(reg)


def _copy_of(artifact: Path, tmp_path: Path) -> Path:
    target = tmp_path / artifact.name
    shutil.copytree(artifact, target)
    return target


@pytest.fixture
def copy(artifact: Path, tmp_path: Path) -> Path:
    return _copy_of(artifact, tmp_path)


def _rewrite_sha(directory: Path) -> None:
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    manifest["sha256"] = sha256_of(directory / "model.onnx")
    (directory / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_export_parity_on_dynamic_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = NetworkConfig(n_items=40, n_types=13, hidden=32, layers=2, heads=2, top_k=7)
    net = SequenceTransformer(cfg, torch.randn(40, 384) * 0.05, torch.ones(40)).eval()
    serving = export_onnx(net, np.linspace(0, 12, 101), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    for batch, length in ((1, 2), (7, 30), (64, 50)):
        b = {
            "item_ids": rng.integers(3, 40, (batch, length)),
            "event_types": rng.integers(1, 13, (batch, length)),
            "time_gaps": rng.integers(0, 32, (batch, length)),
        }
        b["item_ids"][0, : length // 2] = 0
        b["event_types"][0, : length // 2] = 0
        assert parity(serving, tmp_path / "m.onnx", b) <= 1e-4
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert model.opset_import[0].version >= 17
    assert "Reshape" not in {node.op_type for node in model.graph.node}  # serving_block's point


class _LogSumExp(torch.nn.Module):
    def forward(self, x):
        return exportable_logsumexp(x)


def test_the_exported_normaliser_stays_exact_over_a_big_catalog() -> None:
    # onnxruntime's ReduceLogSumExp is 4.3e-4 off float64 on these 300,000 logits (its float32
    # accumulation); the graph's own form must stay within 2e-6
    x = np.random.default_rng(0).gumbel(0, 1, (4, 300_000)).astype(np.float32)
    graph = onnx_bytes(_LogSumExp(), (torch.from_numpy(x),), {"x": 0}, {"y": 0}, "items")
    (got,) = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    exact = torch.logsumexp(torch.from_numpy(x).double(), dim=-1).numpy()
    assert np.abs(got - exact).max() < 2e-6


def test_top_k_swaps_are_allowed_between_near_ties_only() -> None:
    ref = {"top_items": np.array([[5, 6, 7]]), "top_scores": np.array([[0.5, 0.2, 0.1]])}
    torch_says = {5: 0.5, 6: 0.2, 7: 0.1, 8: 0.1 - 1e-6, 9: 0.05}
    # in the last place: item 8 is a near-tie of 7, though 7's neighbour in the list is not
    check_top_items(np.array([[5, 6, 8]]), ref, lambda r, i: torch_says[int(i)])
    with pytest.raises(ExportError, match="item 2 of row 0 differs and is not a tie"):
        check_top_items(np.array([[5, 6, 9]]), ref, lambda r, i: torch_says[int(i)])
    with pytest.raises(ExportError, match="item 0 of row 0"):
        check_top_items(np.array([[6, 5, 7]]), ref, lambda r, i: torch_says[int(i)])


def test_artifact_loads_and_scores(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    manifest = orjson.loads((artifact / "manifest.json").read_bytes())
    assert loaded.provider == "CPUExecutionProvider"
    assert manifest["parity_max_abs_diff"] <= 1e-4
    out = loaded.run(golden_batch(loaded.vocab, batch=4, length=6))
    assert set(out) == set(OUTPUTS)
    assert out["top_items"].shape == (4, manifest["top_k"])
    assert {p.name for p in artifact.iterdir()} >= {
        "model.onnx",
        "manifest.json",
        "vocab.json",
        "report.json",
        "report.png",
    }


def _random_sequences(scorer: OnnxScorer, count: int, seed: int) -> list[list[SeqEvent]]:
    rng = np.random.default_rng(seed)
    items, types = scorer.loaded.vocab.items, scorer.event_types
    return [
        [
            SeqEvent(
                1e9 + 60.0 * t,
                types[rng.integers(len(types))],
                f"e{t}",
                items[rng.integers(len(items))] if t % 3 else None,
                9.5 if t % 2 else None,
            )
            for t in range(int(rng.integers(1, scorer.max_length + 1)))
        ]
        for _ in range(count)
    ]


def test_scorer_groups_by_length_without_changing_outputs(artifact: Path) -> None:
    """The scorer runs sorted length groups; each row must match one padded batch, also for
    a scorer that keeps fewer events than some sequences hold (their latest ones). On the fp32
    graph: int8's outputs move slightly with the other rows of a call (models/quantise.py)."""
    scorer = OnnxScorer.from_directory(artifact, max_length=50, precision="fp32")
    sequences = _random_sequences(scorer, 3 * LENGTH_GROUP + 5, seed=3)
    for kept in (50, 7):
        outputs = OnnxScorer(scorer.loaded, max_length=kept).run(sequences)
        reference = scorer.loaded.run(
            pad_batch(
                [[scorer.loaded.vocab.item_index(e.item_id) for e in s] for s in sequences],
                [[scorer.event_types.index(e.type) + 1 for e in s] for s in sequences],
                [[e.ts for e in s] for s in sequences],
                length=min(kept, max(len(s) for s in sequences)),
            )
        )
        for name in ("next_action", "top_scores", "risk", "surprise"):
            np.testing.assert_allclose(outputs[name], reference[name], atol=1e-5, rtol=1e-4)
        np.testing.assert_array_equal(outputs["top_items"], reference["top_items"])


async def test_scoring_process_matches_in_process_scores_and_survives_a_crash(
    artifact: Path,
) -> None:
    local = OnnxScorer.from_directory(artifact, max_length=50)
    sequences = _random_sequences(local, 70, seed=5)
    expected = scores_from(local.run(sequences), local.item_ids)
    process = ScoringProcess()
    await process.start()
    try:
        remote = RemoteScorer(process, await process.load(artifact, 50, None))
        assert (remote.version, remote.event_types) == (local.version, local.event_types)
        assert remote.precision == local.precision
        prefixes = [UserSequence(s).to_bytes() for s in sequences]
        texts = [None] * len(prefixes)
        # A batch cancelled while the child works on it: its late reply must not be taken
        # as the next batch's.
        others = [UserSequence(s).to_bytes() for s in _random_sequences(local, 2000, seed=6)]
        cancelled = asyncio.ensure_future(remote.score(others, [None] * len(others)))
        while not process._lock.locked():
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        got = await remote.score(prefixes, texts)
        np.testing.assert_allclose(got.risk, expected.risk, atol=1e-6)
        for attempt in ("first", "after the child was killed"):
            got = await remote.score(prefixes, texts)
            for name in ("next_action", "top_scores", "risk", "surprise"):
                np.testing.assert_allclose(getattr(got, name), getattr(expected, name), atol=1e-6)
            assert got.top_items == expected.top_items, attempt
            assert process._proc is not None
            process._proc.kill()
            await process._proc.wait()
        with pytest.raises(ScoringFailed, match="KeyError"):
            await process.score("no-such-version", prefixes, texts)
        with pytest.raises(ModelRefused, match="missing"):
            await process.load(artifact.parent / "missing", 50, None)
        with pytest.raises(ModelRefused, match="announced sha256"):
            await process.load(artifact, 50, None, "0" * 64)
        announced = sha256_of(artifact / "model.onnx")
        assert (await process.load(artifact, 50, None, announced))["version"] == remote.version
    finally:
        await process.stop()
    assert process._proc is None


def test_a_scoring_process_does_not_hold_the_item_texts(copy: Path) -> None:
    vocab = Vocab.load(copy / "vocab.json")
    texts = {item: f"title of {item}" for item in vocab.items}
    Vocab(vocab.items, texts, vocab.types).save(copy / "vocab.json")  # same hashes
    assert Vocab.load(copy / "vocab.json").item_text == texts  # the artifact records them
    assert load_artifact(copy).vocab.item_text == {}


def test_tampered_model_refused(copy: Path) -> None:
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match="sha256"):
        load_artifact(copy)


def test_truncated_model_refused_even_with_matching_sha(copy: Path) -> None:
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 3])
    _rewrite_sha(copy)
    with pytest.raises(ModelRefused, match=r"parse|session|golden"):
        load_artifact(copy, precision="fp32")  # the graph these edits break


def test_wrong_signature_refused(copy: Path) -> None:
    model = onnx.load(str(copy / "model.onnx"))
    old = model.graph.output[3].name
    model.graph.output[3].name = "fraud"
    for node in model.graph.node:
        node.output[:] = ["fraud" if o == old else o for o in node.output]
    onnx.save(model, str(copy / "model.onnx"))
    _rewrite_sha(copy)
    with pytest.raises(ModelRefused, match="signature"):
        load_artifact(copy, precision="fp32")  # the graph these edits break


def test_manifest_declaring_other_outputs_refused(copy: Path) -> None:
    manifest = orjson.loads((copy / "manifest.json").read_bytes())
    manifest["outputs"] = manifest["outputs"][:-1]
    (copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelRefused, match="contract"):
        load_artifact(copy)


def test_unknown_files_refused(copy: Path) -> None:
    (copy / "model.pt").write_bytes(b"not loaded")
    with pytest.raises(ModelRefused, match="not an artifact file"):
        load_artifact(copy)


def test_external_data_refused(copy: Path) -> None:
    model = onnx.load(str(copy / "model.onnx"))
    onnx.save(
        model,
        str(copy / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.data",
        size_threshold=0,
    )
    _rewrite_sha(copy)
    with pytest.raises(ModelRefused, match="external"):
        load_artifact(copy)


def test_custom_op_refused(copy: Path) -> None:
    model = onnx.load(str(copy / "model.onnx"))
    model.graph.node[0].domain = "com.evil"
    model.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))
    onnx.save(model, str(copy / "model.onnx"))
    _rewrite_sha(copy)
    with pytest.raises(ModelRefused, match="custom"):
        load_artifact(copy, precision="fp32")  # the graph these edits break


def test_promote_marks_current(copy: Path) -> None:
    reg = copy.parent
    assert registry.current(reg) is None
    record = registry.promote(reg, copy.name)
    assert registry.current(reg) == copy.name
    assert record.sha256 == sha256_of(copy / "model.onnx")
    assert registry.versions(reg) == [copy.name]


@pytest.fixture(scope="module")
def candidate_artifact(tmp_path_factory) -> Path:
    """The same training as ``artifact``, served through an item index with a normaliser
    estimated from 8 head items and 16 sampled ones."""
    reg = tmp_path_factory.mktemp("registry")
    return reg / tiny_model(reg, serving="candidates", index=IndexConfig(head=8, sample=16))


def test_candidate_artifact_scores_like_the_exact_one(artifact, candidate_artifact) -> None:
    exact = OnnxScorer.from_directory(artifact, max_length=50, precision="fp32")
    candidates = OnnxScorer.from_directory(candidate_artifact, max_length=50, precision="fp32")
    assert candidates.loaded.item_index is not None and exact.loaded.item_index is None
    report = orjson.loads((candidate_artifact / "report.json").read_bytes())
    assert report["serving"] == "candidates" and report["candidate_path"]["recall@10"] == 1.0
    sequences = _random_sequences(exact, 40, seed=5)
    want, got = exact.run(sequences), candidates.run(sequences)
    np.testing.assert_array_equal(got["top_items"], want["top_items"])
    np.testing.assert_allclose(got["next_action"], want["next_action"], atol=1e-5)
    # the normaliser is estimated: probabilities close, not equal
    np.testing.assert_allclose(got["top_scores"], want["top_scores"], rtol=0.05)
    assert np.mean(np.abs(got["surprise"] - want["surprise"])) < 0.05


def test_candidate_artifact_without_its_index_refused(candidate_artifact, tmp_path) -> None:
    copy = _copy_of(candidate_artifact, tmp_path)
    (copy / "items.faiss").unlink()
    with pytest.raises(ModelRefused, match=r"items\.faiss is missing"):
        load_artifact(copy)


def test_tampered_item_index_refused(candidate_artifact, tmp_path) -> None:
    copy = _copy_of(candidate_artifact, tmp_path)
    data = bytearray((copy / "items.faiss").read_bytes())
    data[-5] ^= 0xFF
    (copy / "items.faiss").write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match=r"items\.faiss: sha256"):
        load_artifact(copy)


def test_item_index_of_another_catalog_refused(candidate_artifact, tmp_path) -> None:
    copy = _copy_of(candidate_artifact, tmp_path)
    other = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    save_index(build_index(other, IndexConfig()), copy / "items.faiss")
    manifest = orjson.loads((copy / "manifest.json").read_bytes())
    manifest["item_index"]["sha256"] = sha256_of(copy / "items.faiss")
    (copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(ModelRefused, match="item index holds 17 items"):
        load_artifact(copy)


def test_bench_skips_exact_batch_sizes_whose_logits_would_not_fit(
    artifact, candidate_artifact, monkeypatch
) -> None:
    n_items = Vocab.load(artifact / "vocab.json").n_items
    monkeypatch.setattr(bench, "EXACT_LOGITS_BYTES", 32 * n_items * 8)
    exact = bench.inference(artifact, batch_sizes=(1, 32, 33), budget=0.01)
    assert list(exact["sequences_per_s"]) == ["1", "32"] and exact["skipped"] == [33]
    candidates = bench.inference(candidate_artifact, batch_sizes=(1, 33), budget=0.01)
    assert list(candidates["sequences_per_s"]) == ["1", "33"] and candidates["skipped"] == []
