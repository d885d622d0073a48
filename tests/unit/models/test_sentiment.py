"""The sentiment model: fine-tuned, exported int8, cached, carried by the artifact, verified on
load, and served by the scoring process's scorer (lexicon only for artifacts without one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from models.pipeline import train_and_register
from models.runtime import ModelRefused, load_artifact
from models.sentiment import read_labelled
from models.text_runtime import PADDING_WASTE, TEXT_GROUP, length_groups
from tests.support.helpers import synthetic_history, tiny_config, tiny_sentiment
from workers.scoring.scorer import OnnxScorer


@pytest.fixture(scope="module")
def with_sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered artifact that carries a sentiment model (fitted once for this module)."""
    root = tmp_path_factory.mktemp("sentiment")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORESIGHT_CACHE_DIR", str(root / "cache"))
        version, report = train_and_register(
            synthetic_history(),
            root / "registry",
            tiny_config(),
            cold_start_share=None,
            sentiment=tiny_sentiment(root / "sentences"),
        )
    assert report["sentiment"]["dev_accuracy_int8"] >= 0.95  # the sentences are unambiguous
    return root / "registry" / version


def test_the_artifact_carries_a_verified_sentiment_model(with_sentiment: Path) -> None:
    manifest = orjson.loads((with_sentiment / "manifest.json").read_bytes())
    entry = manifest["sentiment"]
    assert entry["layers"] == 1 and entry["max_tokens"] == 32
    assert {"sentiment.onnx", "tokenizer.json", "sentiment.png"} <= {
        p.name for p in with_sentiment.iterdir()
    }
    report = orjson.loads((with_sentiment / "report.json").read_bytes())["sentiment"]
    assert sum(b["count"] for b in report["calibration"]) == report["dev_sentences"] == 60
    assert report["cpu_ms_per_text"] > 0
    loaded = load_artifact(with_sentiment)
    assert loaded.sentiment is not None
    good, bad, neutral = loaded.sentiment.score(
        ["the story was superb , truly superb", "the lamp was dreadful , so dreadful", ""]
    )
    assert -1.0 <= bad < 0.0 < good <= 1.0 and -1.0 <= neutral <= 1.0


def test_the_scorer_scores_texts_and_leaves_other_rows_empty(with_sentiment: Path) -> None:
    scorer = OnnxScorer.from_directory(with_sentiment, max_length=10)
    out = scorer.sentiment({1: "her performance was charming , just charming"}, rows=3)
    assert np.isnan(out[0]) and np.isnan(out[2]) and out[1] > 0


def test_texts_are_grouped_by_length_with_little_padding() -> None:
    lengths = np.array([40, 9, 10, 41, 60, 9, 11, 39] + [20] * 20)
    groups = length_groups(lengths)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    for group in groups:
        widths = lengths[group]
        assert list(widths) == sorted(widths) and len(group) <= TEXT_GROUP
        assert len(group) * widths.max() <= widths.sum() * (1 + PADDING_WASTE)
    assert [1, 5, 2] in groups and [4] in groups  # 9-10 tokens together, 60 alone


def test_grouped_texts_score_as_they_do_alone(with_sentiment: Path) -> None:
    model = load_artifact(with_sentiment).sentiment
    assert model is not None
    texts = [
        "the story was superb , truly superb and the cast was superb too",
        "dreadful",
        "",
        "the lamp was dreadful , so dreadful , and the box was dreadful",
        "charming",
    ]
    alone = np.array([model.score([t])[0] for t in texts])
    # within int8 noise: the graph quantises its activations per call, padding included
    assert np.abs(model.score(texts) - alone).max() < 0.02


def test_an_artifact_without_sentiment_falls_back_to_the_lexicon(tmp_path: Path) -> None:
    version, _ = train_and_register(
        synthetic_history(), tmp_path, tiny_config(), cold_start_share=None
    )
    scorer = OnnxScorer.from_directory(tmp_path / version, max_length=10)
    assert scorer.loaded.sentiment is None
    out = scorer.sentiment({0: "great, love it", 1: "it is a lamp", 2: "broken"}, rows=3)
    assert out[0] == 1.0 and np.isnan(out[1]) and out[2] == -1.0


def _copy(artifact: Path, tmp_path: Path) -> Path:
    target = tmp_path / artifact.name
    shutil.copytree(artifact, target)
    return target


def test_a_tampered_sentiment_graph_is_refused(with_sentiment: Path, tmp_path: Path) -> None:
    copy = _copy(with_sentiment, tmp_path)
    (copy / "sentiment.onnx").write_bytes((copy / "sentiment.onnx").read_bytes()[:-10])
    with pytest.raises(ModelRefused, match=r"sentiment\.onnx does not match"):
        load_artifact(copy)


def test_a_missing_tokenizer_is_refused(with_sentiment: Path, tmp_path: Path) -> None:
    copy = _copy(with_sentiment, tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelRefused, match=r"tokenizer\.json is missing"):
        load_artifact(copy)


def test_a_refit_is_skipped_when_the_inputs_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import sentiment_artifact

    monkeypatch.setenv("FORESIGHT_CACHE_DIR", str(tmp_path / "cache"))
    source = tiny_sentiment(tmp_path / "sentences")
    first, _ = sentiment_artifact.add_sentiment(_stage(tmp_path, "a"), source, [])

    def no_refit(*_args, **_kwargs):
        raise AssertionError("refitted although the inputs did not change")

    monkeypatch.setattr(sentiment_artifact, "fit_sentiment", no_refit)
    again, _ = sentiment_artifact.add_sentiment(_stage(tmp_path, "b"), source, [])
    assert again["sha256"] == first["sha256"]
    with pytest.raises(AssertionError, match="refitted"):  # new reviews change the inputs
        sentiment_artifact.add_sentiment(_stage(tmp_path, "c"), source, [("great", 1)])


def _stage(root: Path, name: str) -> Path:
    stage = root / name
    stage.mkdir()
    return stage


def test_labelled_files_must_have_a_label_and_a_text(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("label\tsentence\n1\tfine\n2\tnot a label\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:3"):
        read_labelled(path)


def test_the_sentiment_command_scores_one_line_each(with_sentiment: Path) -> None:
    from click.testing import CliRunner

    from models import registry
    from workers.cli import main

    registry.mark_current(with_sentiment.parent, with_sentiment.name)
    texts = "the film was superb , truly superb\nthe lamp was dreadful , so dreadful\n"
    result = CliRunner().invoke(
        main, ["sentiment", "--registry", str(with_sentiment.parent)], input=texts
    )
    assert result.exit_code == 0, result.output
    good, bad = (float(line) for line in result.stdout.splitlines())
    assert -1 <= bad < 0 < good <= 1
    assert "language model" in result.stderr
