"""The trainer process end to end: data → fit → evaluate → export → parity → registry.

Also the long-lived refresher: retrain on a schedule and promote only when the new version is
not worse than the current one on the same validation split (the regression gate).
"""

from __future__ import annotations

import logging
import platform
import resource
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models import registry
from models.contract import (
    CANDIDATE_OUTPUTS,
    INPUTS,
    N_RESERVED_ITEMS,
    OUTPUTS,
    PRECISIONS,
    sha256_of,
)
from models.data import History
from models.export import OPSET, export_onnx, parity
from models.features import pad_batch
from models.index_export import add_item_index
from models.network import NetworkConfig, SequenceTransformer
from models.quantise import add_int8
from models.sentiment_artifact import SentimentSource, add_sentiment
from models.text_export import add_text_encoder
from models.train import (
    Dataset,
    TrainConfig,
    TrainResult,
    baselines,
    build_dataset,
    cold_start,
    evaluate,
    fit,
    loss_kind,
    serving_kind,
    surprise_quantiles,
    train_config_dict,
)
from models.vocab import Vocab

log = logging.getLogger(__name__)


def peak_rss_mb() -> int:
    """This process's resident-memory high-water mark so far, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _heldout_batch(data: Dataset, max_len: int, n: int = 64) -> dict[str, np.ndarray]:
    cases = data.cases("test")[:n]
    return pad_batch(
        [c.input_items for c in cases],
        [c.input_types for c in cases],
        [c.input_ts for c in cases],
        length=min(max_len, 20),
    )


def _plot(path: Path, curves: dict, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    ax1.plot(curves["loss"], label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_title("training loss")
    ax2.plot(curves["val_ndcg@10"], label="NDCG@10")
    ax2.plot(curves["val_hr@10"], label="HR@10")
    ax2.axvline(report["best_epoch"] - 1, color="grey", linestyle=":", label="best epoch")
    ax2.set_xlabel("epoch")
    ax2.set_title("validation (full ranking)")
    ax2.legend()
    names = ["model", "markov", "most_popular"]
    values = [report["metrics"]["ndcg@10"]] + [report["baselines"][b]["ndcg@10"] for b in names[1:]]
    if "int8" in report:
        names.insert(1, "model int8")
        values.insert(1, report["int8"]["test"]["int8"]["ndcg@10"])
    if "cold_start" in report:
        names += ["cold: model", "cold: text"]
        values += [
            report["cold_start"]["ndcg@10"],
            report["cold_start"]["text_baseline"]["ndcg@10"],
        ]
    ax3.bar(names, values, color=[f"C{i}" for i in range(len(names))])
    ax3.set_title("test NDCG@10")
    ax3.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _io_spec(spec: dict[str, tuple[str, int]], names: dict[str, list[str | int]]) -> list[dict]:
    return [{"name": n, "type": t, "shape": names[n]} for n, (t, _) in spec.items()]


def provenance(history: History) -> dict:
    """What a report says of the data it was trained on (small: kept where the history is not)."""
    return {
        "source": history.source,
        "fingerprint": history.fingerprint,
        "interactions": len(history.interactions),
    }


def training_report(
    data: Dataset, result: TrainResult, cfg: TrainConfig, source: dict, users: int | None = None
) -> dict:
    """A training run's report: test and validation metrics, the baselines on the same test
    users and what was trained how. With ``users``, the metrics are on the first ``users`` of
    each split only (a full ranking of a million items per user is costly)."""
    test_cases = data.cases("test")[:users]
    report: dict = {
        "metrics": evaluate(result.net, test_cases, cfg.max_len),
        "validation": evaluate(result.net, data.cases("val")[:users], cfg.max_len),
        "baselines": baselines(data, test_cases),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curves["loss"]),
        "seed": cfg.seed,
        "data": {**source, "users": len(data.users), "items": len(data.vocab.items)},
        "train_config": train_config_dict(cfg),
        "loss": loss_kind(cfg, data.vocab.n_items),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    if users is not None:
        report["sampled_users"] = users
    return report


def train_and_register(
    history: History,
    registry_dir: Path,
    cfg: TrainConfig,
    cold_start_share: float | None = 0.1,
    data: Dataset | None = None,
    sentiment: SentimentSource | None = None,
) -> tuple[str, dict]:
    """Train on ``history`` and publish a verified artifact; returns (version, report). With
    ``sentiment``, the artifact carries a sentiment model too (see models/sentiment_artifact.py);
    without, the worker falls back to its opinion-word lexicon."""
    began = time.monotonic()
    data = data or build_dataset(history)
    result = fit(data, cfg)
    report = training_report(data, result, cfg, provenance(history))
    if cold_start_share:
        report["cold_start"] = cold_start(data, cfg, cold_start_share)
    report["train_seconds"] = round(time.monotonic() - began, 1)
    report["peak_rss_mb"] = peak_rss_mb()
    version = register_network(
        result.net, result.curves, data, cfg, report, registry_dir, sentiment, history.rated_texts
    )
    return version, report


def register_network(
    net: SequenceTransformer,
    curves: dict,
    data: Dataset,
    cfg: TrainConfig,
    report: dict,
    registry_dir: Path,
    sentiment: SentimentSource | None = None,
    rated_texts: list | None = None,
) -> str:
    """Export a trained network as a verified artifact in ``registry_dir``: the graph (exact or
    with its item index), weights, vocabulary, text encoder and sentiment model where they
    apply, report and manifest. ``report`` is the training's; what the export measures (the
    candidate path, the sentiment model) is added to it. Returns the version."""
    report["serving"] = serving_kind(cfg, data.vocab.n_items)
    version = registry.new_version()
    stage = registry.staging_dir(registry_dir, version)
    quantiles = surprise_quantiles(net, data, cfg.max_len)
    candidates = serving_kind(cfg, data.vocab.n_items) == "candidates"
    serving = export_onnx(net, quantiles, stage / "model.onnx", candidates)
    diff = parity(serving, stage / "model.onnx", _heldout_batch(data, cfg.max_len))
    users = report.get("sampled_users")
    splits = {"validation": data.cases("val")[:users], "test": data.cases("test")[:users]}
    table = net.item_table().detach().numpy()
    int8_entry, report["int8"] = add_int8(stage, splits, cfg.max_len, table)
    if candidates:
        index_entry, report["candidate_path"] = add_item_index(
            stage, net, data, cfg.index, quantiles, cfg.max_len
        )
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(stage / "weights.safetensors"),
    )
    data.vocab.save(stage / "vocab.json")
    if data.whitening is not None:  # items with text: new catalog items can be ranked
        text_entry = add_text_encoder(stage, net, data)
    if sentiment is not None:
        sentiment_entry, report["sentiment"] = add_sentiment(stage, sentiment, rated_texts or [])
    registry.write_json(stage / "report.json", report)
    _plot(stage / "report.png", curves, report)
    labelled = any(not np.isnan(f) for u in data.users for f in u.fraud)
    shapes: dict[str, list[str | int]] = {n: ["batch", "sequence"] for n in INPUTS}
    shapes.update(
        next_action=["batch", data.vocab.n_types - 1],
        top_items=["batch", cfg.network.top_k],
        top_scores=["batch", cfg.network.top_k],
        risk=["batch"],
        surprise=["batch"],
        user_vector=["batch", cfg.network.hidden],
        log_normaliser=["batch"],
        prev_vector=["batch", cfg.network.hidden],
        observed_logit=["batch"],
        type_nll=["batch"],
    )
    manifest = {
        "version": version,
        "created": datetime.now(UTC).isoformat(),
        "sha256": sha256_of(stage / "model.onnx"),
        "opset": OPSET,
        "inputs": _io_spec(INPUTS, shapes),
        "outputs": _io_spec(CANDIDATE_OUTPUTS if candidates else OUTPUTS, shapes),
        "serving": "candidates" if candidates else "exact",
        "vocab_hashes": data.vocab.hashes(),
        "event_types": list(data.vocab.types),
        "max_sequence_length": cfg.max_len,
        "top_k": cfg.network.top_k,
        "network": net.config.to_dict(),
        "metrics": {**report["metrics"], "val_ndcg@10": report["validation"]["ndcg@10"]},
        "risk_head_trained": labelled,
        "parity_max_abs_diff": diff,
        "training_data": report["data"],
    }
    if int8_entry is not None:
        manifest["int8"] = int8_entry
    if candidates:  # the graph has no quantiles: the worker calibrates surprise with these
        manifest["item_index"] = index_entry
        manifest["surprise_quantiles"] = [float(q) for q in quantiles]
    if sentiment is not None:
        manifest["sentiment"] = sentiment_entry
    if data.whitening is not None:
        manifest["text_encoder"] = text_entry
    registry.write_json(stage / "manifest.json", manifest)
    registry.publish(registry_dir, version, stage)
    # exactly what a worker will do, with each graph the artifact has
    for precision in PRECISIONS if int8_entry else ("fp32",):
        registry.verify(registry_dir, version, precision)
    return version


def load_network(directory: Path) -> tuple[SequenceTransformer, Vocab, dict]:
    """A registry version's torch network (from safetensors) for the gate and the naive bench."""
    manifest = registry.manifest(directory.parent, directory.name)
    vocab = Vocab.load(directory / "vocab.json", texts=False)
    state = load_file(str(directory / "weights.safetensors"))
    if "text_of_item" not in state:  # artifacts from before the distinct-text rows: one a row
        state["text_of_item"] = torch.arange(len(state["text"]))
    net = SequenceTransformer(
        NetworkConfig(**manifest["network"]), state["text"], state["seen"], state["text_of_item"]
    )
    net.load_state_dict(state)
    return net.eval(), vocab, manifest


def _remap(data: Dataset, vocab: Vocab) -> Dataset:
    """The same users and events indexed by another model's vocabulary."""
    users = []
    for u in data.users:
        items = [
            vocab.item_index(data.vocab.item_id(i)) if i >= N_RESERVED_ITEMS else i for i in u.items
        ]
        users.append(replace(u, items=items))
    return replace(data, vocab=vocab, users=users)


def gate(registry_dir: Path, candidate: str, data: Dataset, max_len: int) -> dict:
    """Compare the candidate with CURRENT on the candidate's validation split."""
    current = registry.current(registry_dir)
    new_net, new_vocab, _ = load_network(registry_dir / candidate)
    new = evaluate(new_net, _remap(data, new_vocab).cases("val"), max_len)["ndcg@10"]
    if current is None:
        return {"promote": True, "candidate": new, "current": None, "reason": "no current model"}
    old_net, old_vocab, _ = load_network(registry_dir / current)
    old = evaluate(old_net, _remap(data, old_vocab).cases("val"), max_len)["ndcg@10"]
    ok = new >= old - 1e-9
    return {
        "promote": ok,
        "candidate": new,
        "current": old,
        "current_version": current,
        "reason": "not worse than current" if ok else "worse than current on validation",
    }


def refresh_once(
    history: History,
    registry_dir: Path,
    cfg: TrainConfig,
    cold_start_share: float | None,
    settings=None,
    promote: bool = True,
    sentiment: SentimentSource | None = None,
) -> dict:
    """Train, gate against CURRENT, promote when not worse; the decision goes into the report."""
    data = build_dataset(history)
    version, report = train_and_register(
        history, registry_dir, cfg, cold_start_share, data, sentiment
    )
    decision = gate(registry_dir, version, data, cfg.max_len)
    decision["promoted"] = bool(promote and decision["promote"])
    if decision["promoted"]:
        registry.promote(registry_dir, version, settings)
    report["gate"] = decision
    registry.write_json(registry_dir / version / "report.json", report)
    log.info("gate for %s: %s", version, decision)
    return {"version": version, "report": report}
