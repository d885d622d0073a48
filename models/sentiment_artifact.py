"""The sentiment part of a model artifact: fit it (or reuse the fit cached for the same inputs),
export it, measure it, and put ``sentiment.onnx``, ``tokenizer.json`` and ``sentiment.png``
beside the sequence model.

Why a cache: the fine-tune takes about ten minutes per epoch on a 2-core CPU and depends only
on the labelled sentences, the shop's rated reviews and the config, not on the behaviour data
that every refresh retrains on. The cache is keyed by a hash of all of those inputs and holds
only ONNX and JSON.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from models.contract import SENTIMENT_INPUTS, SENTIMENT_OUTPUTS, sha256_of
from models.sentiment import (
    Labelled,
    SentimentConfig,
    export_sentiment,
    fit_sentiment,
    read_labelled,
    tokenizer_path,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentimentSource:
    """Where the labelled sentences are (``train.tsv`` to fit, ``dev.tsv`` to choose) and how
    to fine-tune on them."""

    directory: Path
    config: SentimentConfig = field(default_factory=SentimentConfig)


def cache_root() -> Path:
    """``FORESIGHT_CACHE_DIR`` (default ``~/.cache/foresight``) / sentiment."""
    base = os.environ.get("FORESIGHT_CACHE_DIR") or Path.home() / ".cache" / "foresight"
    return Path(base) / "sentiment"


def _cache_key(source: SentimentSource, adaptation: Labelled) -> str:
    digest = hashlib.sha256(orjson.dumps(source.config.to_dict(), option=orjson.OPT_SORT_KEYS))
    digest.update(sha256_of(source.directory / "train.tsv", source.directory / "dev.tsv").encode())
    digest.update(orjson.dumps(adaptation))
    return digest.hexdigest()[:32]


def cost_per_text(graph: Path, max_tokens: int, n: int = 256) -> float:
    """Milliseconds per review-sized text (20-60 words) on one CPU thread, as the worker runs
    it (tokenising included)."""
    import onnxruntime as ort

    from models.text_runtime import SentimentModel, load_tokenizer

    rng = np.random.default_rng(0)
    words = "the it was not very good and quite a bit slow but works fine for the price".split()
    texts = [" ".join(rng.choice(words, int(rng.integers(20, 61)))) for _ in range(n)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    model = SentimentModel(session, load_tokenizer(tokenizer_path(), max_tokens), "")
    model.score(texts[:16])  # warm-up
    began = time.perf_counter()
    model.score(texts)
    return (time.perf_counter() - began) / n * 1000.0


def _fit_and_export(source: SentimentSource, adaptation: Labelled, into: Path) -> dict:
    cfg = source.config
    train = read_labelled(source.directory / "train.tsv")
    dev = read_labelled(source.directory / "dev.tsv")
    log.info(
        "fine-tuning the sentiment model on %d sentences (+%d rated reviews), %d layers",
        len(train), len(adaptation), cfg.layers,
    )  # fmt: skip
    net, report = fit_sentiment(train + adaptation, dev, cfg)
    report["adapted_on_reviews"] = len(adaptation)
    report.update(export_sentiment(net, into / "sentiment.onnx", dev, cfg.max_tokens))
    report["cpu_ms_per_text"] = round(cost_per_text(into / "sentiment.onnx", cfg.max_tokens), 3)
    (into / "sentiment.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def _plot(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    bins = [b for b in report["calibration"] if b["count"]]
    ax1.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax1.plot(
        [b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label="model"
    )
    ax1.set_xlabel("predicted P(positive)")
    ax1.set_ylabel("observed share positive (dev)")
    ax1.set_title("sentiment calibration")
    ax1.legend()
    ax2.plot([c["step"] for c in report["curve"]], [c["dev_accuracy"] for c in report["curve"]])
    ax2.set_xlabel("step")
    ax2.set_title(f"dev accuracy (served int8: {report['dev_accuracy_int8']:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def add_sentiment(stage: Path, source: SentimentSource, adaptation: Labelled) -> tuple[dict, dict]:
    """Put the sentiment files into the staged artifact ``stage``; returns (manifest entry,
    report). ``adaptation`` holds the shop's rated reviews, trained on beside the sentences."""
    cached = cache_root() / _cache_key(source, adaptation)
    if (cached / "sentiment.json").is_file() and (cached / "sentiment.onnx").is_file():
        log.info("sentiment model: reusing the fit cached in %s", cached)
        report = orjson.loads((cached / "sentiment.json").read_bytes())
    else:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            report = _fit_and_export(source, adaptation, Path(tmp))
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(tmp, cached)
            os.makedirs(tmp)  # so that the context manager has something to remove
    shutil.copyfile(cached / "sentiment.onnx", stage / "sentiment.onnx")
    shutil.copyfile(tokenizer_path(), stage / "tokenizer.json")
    _plot(stage / "sentiment.png", report)
    entry = {
        "sha256": sha256_of(stage / "sentiment.onnx"),
        "tokenizer_sha256": sha256_of(stage / "tokenizer.json"),
        "max_tokens": source.config.max_tokens,
        "layers": source.config.layers,
        "dev_accuracy": report["dev_accuracy_int8"],
        "inputs": [{"name": n, "type": t} for n, (t, _) in SENTIMENT_INPUTS.items()],
        "outputs": [{"name": n, "type": t} for n, (t, _) in SENTIMENT_OUTPUTS.items()],
    }
    return entry, report
