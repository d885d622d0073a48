"""The trainer's commands (``foresight train``, ``foresight model ...``), added to the
``foresight`` command by workers/cli.py; torch is imported only when a command runs."""

from __future__ import annotations

from pathlib import Path

import click

from schemas.settings import settings_or_exit

commands = click.Group("trainer")


def path_option(name: str, help: str, exists: bool = False):
    """An optional file or directory option (None when not given)."""
    return click.option(name, type=click.Path(exists=exists, path_type=Path), help=help)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: use e.g. 90s, 30m, 6h") from None


@commands.command()
@click.option(
    "--data",
    "data_spec",
    required=True,
    help="ml100k:DIR | pairs:FILE (user item a line) | jsonl:FILE | csv:FILE | parquet:FILE"
    " | topic:NAME",
)
@path_option("--labels", "JSONL of {event_id, fraud} labels for the risk head.", exists=True)
@path_option(
    "--catalog",
    "The shop's catalog (JSONL or CSV, as `foresight catalog publish` reads it): every item "
    "joins the model, ranked by its text until it has interactions.",
    exists=True,
)
@path_option("--registry", "Registry directory (default FORESIGHT_REGISTRY).")
@click.option("--epochs", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-len", type=int, default=None, help="Events per sequence (default setting).")
@click.option(
    "--cold-start",
    "cold_share",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of items hidden in the cold-start run; 0 skips it.",
)
@click.option("--every", default=None, help="Retrain on this schedule (e.g. 6h) until stopped.")
@click.option(
    "--promote/--no-promote",
    default=True,
    show_default=True,
    help="Promote when the regression gate passes.",
)
@click.option("--users", type=int, default=None, help="Train on the first N users only.")
@click.option(
    "--loss",
    type=click.Choice(["auto", "full", "sampled"]),
    default="auto",
    show_default=True,
    help="Next-item loss: full softmax, sampled softmax, or auto (full up to 10,000 items).",
)
@click.option(
    "--negatives", type=int, default=1024, show_default=True, help="Sampled-loss negatives."
)
@click.option(
    "--dropout",
    type=float,
    default=0.2,
    show_default=True,
    help="Dropout in the sequence model (sparse data such as Amazon's may want more).",
)
@click.option(
    "--weight-average",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Validate and keep an exponential moving average of the weights with this decay per "
    "step (e.g. 0.999): steadier than the raw weights where validation is noisy (sparse data).",
)
@click.option(
    "--serving",
    type=click.Choice(["auto", "exact", "candidates"]),
    default="auto",
    show_default=True,
    help="How the worker ranks items: exact top-k in the graph, candidates from an item "
    "index (big catalogs), or auto (exact up to --exact-max-items).",
)
@click.option("--exact-max-items", type=int, default=50_000, show_default=True)
@path_option(
    "--sentiment",
    "Directory of labelled sentences (train.tsv, dev.tsv: label<TAB>text) for the sentiment "
    "model; without it the artifact has none and the worker uses its opinion-word lexicon.",
    exists=True,
)
@click.option("--sentiment-layers", type=int, default=4, show_default=True)
@click.option("--sentiment-epochs", type=int, default=1, show_default=True)
@click.option("--sentiment-limit", type=int, default=None, help="Fit on N sentences only.")
def train(
    data_spec,
    labels,
    catalog,
    registry,
    epochs,
    seed,
    max_len,
    cold_share,
    every,
    promote,
    users,
    loss,
    negatives,
    dropout,
    weight_average,
    serving,
    exact_max_items,
    sentiment,
    sentiment_layers,
    sentiment_epochs,
    sentiment_limit,
) -> None:
    """Train, evaluate (EVAL_PROTOCOL.md), export ONNX, verify parity, register, gate, promote."""
    import logging
    import time

    from models.data import load, with_catalog
    from models.network import NetworkConfig
    from models.pipeline import refresh_once
    from models.sentiment import SentimentConfig
    from models.sentiment_artifact import SentimentSource
    from models.train import TrainConfig, natural_order

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    s = settings_or_exit()
    registry = registry or s.registry
    cfg = TrainConfig(
        epochs=epochs,
        seed=seed,
        max_len=max_len or s.max_sequence_length,
        loss=loss,
        negatives=negatives,
        weight_average=weight_average,
        serving=serving,
        exact_serving_max_items=exact_max_items,
        network=NetworkConfig(max_positions=64, top_k=s.top_k, dropout=dropout),
    )
    text = None
    if sentiment is not None:
        text_cfg = SentimentConfig(
            layers=sentiment_layers, epochs=sentiment_epochs, limit=sentiment_limit, seed=seed
        )
        text = SentimentSource(sentiment, text_cfg)
    while True:
        history = load(data_spec, s, labels)
        if catalog:
            history = with_catalog(history, catalog)
        if users:
            keep = set(sorted({x.user_id for x in history.interactions}, key=natural_order)[:users])
            history.interactions = [x for x in history.interactions if x.user_id in keep]
        out = refresh_once(
            history,
            registry,
            cfg,
            cold_share or None,
            s if data_spec.startswith("topic:") or every else None,
            promote,
            text,
        )
        _print_report(out["version"], out["report"], registry)
        if not every:
            return
        click.echo(f"next refresh in {every}")
        time.sleep(_duration(every))


def _print_report(version: str, report: dict, registry: Path) -> None:
    m, b = report["metrics"], report["baselines"]
    click.echo(f"\nversion {version} → {registry / version}")
    click.echo(f"{'':14}{'HR@1':>8}{'HR@10':>8}{'HR@20':>8}{'NDCG@10':>9}")
    click.echo(f"{'model':14}{m['hr@1']:8.4f}{m['hr@10']:8.4f}{m['hr@20']:8.4f}{m['ndcg@10']:9.4f}")
    for name in ("markov", "most_popular"):
        x = b[name]
        click.echo(
            f"{name:14}{x['hr@1']:8.4f}{x['hr@10']:8.4f}{x['hr@20']:8.4f}{x['ndcg@10']:9.4f}"
        )
    if "cold_start" in report:
        c = report["cold_start"]
        click.echo(
            f"cold start ({c['users']} users): model HR@10 {c['hr@10']:.4f} NDCG@10 "
            f"{c['ndcg@10']:.4f} | text-only HR@10 {c['text_baseline']['hr@10']:.4f} "
            f"NDCG@10 {c['text_baseline']['ndcg@10']:.4f}"
        )
        if c.get("through_catalog"):
            t = c["through_catalog"]
            click.echo(
                f"  the same with the hidden items arriving through the catalog path: HR@10 "
                f"{t['hr@10']:.4f} NDCG@10 {t['ndcg@10']:.4f} (text rows differ by at most "
                f"{t['max_abs_diff']:.1e})"
            )
    if "candidate_path" in report:
        c = report["candidate_path"]
        click.echo(
            f"candidate path ({c['users']} users): recall@10 {c['recall@10']:.4f} of exact top-10, "
            f"normaliser error mean {c['log_normaliser_abs_error']['mean']:.4f} "
            f"p99 {c['log_normaliser_abs_error']['p99']:.4f}, surprise error mean "
            f"{c['surprise_abs_error']['mean']:.4f}, {c['us_per_sequence']:.0f} µs a sequence"
        )
    if "int8" in report:
        q = report["int8"]
        pairs = ", ".join(
            f"{split} {q[split]['fp32']['ndcg@10']:.4f} → {q[split]['int8']['ndcg@10']:.4f}"
            for split in ("validation", "test")
        )
        verdict = "served on CPU" if q["served"] else f"not served (drop > {q['tolerance']})"
        click.echo(f"int8 graph: NDCG@10 fp32 → int8 {pairs}; {verdict}")
    g = report.get("gate", {})
    click.echo(
        f"gate: {g.get('reason')} (candidate {g.get('candidate')}, current "
        f"{g.get('current')}) → {'promoted' if g.get('promoted') else 'not promoted'}"
    )
    if "sentiment" in report:
        t = report["sentiment"]
        click.echo(
            f"sentiment: dev accuracy {t['dev_accuracy_int8']:.4f} (int8, served; fp32 "
            f"{t['dev_accuracy']:.4f}), {t['cpu_ms_per_text']:.2f} ms per review on one CPU thread"
        )
    click.echo(
        f"train time {report['train_seconds']}s, {report['loss']} softmax, peak RSS "
        f"{report['peak_rss_mb']} MB"
    )


@commands.group()
def model() -> None:
    """The model registry."""


@model.command("list")
def model_list() -> None:
    """Every version with its test NDCG@10; * marks CURRENT."""
    from models import registry as reg

    s = settings_or_exit()
    current = reg.current(s.registry)
    for version in reg.versions(s.registry):
        m = reg.manifest(s.registry, version)
        click.echo(
            f"{'*' if version == current else ' '} {version}  ndcg@10="
            f"{m['metrics'].get('ndcg@10', float('nan')):.4f}  "
            f"data={m['training_data']['source']}"
        )


@model.command("verify")
@click.argument("version")
def model_verify(version: str) -> None:
    """Load VERSION exactly as the worker would: sha256, signature, golden batch."""
    from models import registry as reg
    from models.runtime import ModelRefused

    try:
        settings = settings_or_exit()
        loaded = reg.verify(settings.registry, version, settings.scoring_precision)
    except ModelRefused as exc:
        raise click.ClickException(f"{version} refused: {exc}") from None
    click.echo(f"{version} ok (provider {loaded.provider}, {loaded.precision} graph)")


@model.command("promote")
@click.argument("version")
@click.option(
    "--announce/--no-announce",
    default=True,
    show_default=True,
    help="Publish on models.control (needs a reachable broker).",
)
def model_promote(version: str, announce: bool) -> None:
    """Verify VERSION, mark it CURRENT, announce it on models.control."""
    from models import registry as reg
    from models.runtime import ModelRefused

    s = settings_or_exit()
    try:
        record = reg.promote(s.registry, version, s if announce else None)
    except ModelRefused as exc:
        raise click.ClickException(f"{version} refused: {exc}") from None
    click.echo(
        f"{version} is current ({record.sha256[:12]}…)"
        + (f", announced on {s.topic('models.control')}" if announce else "")
    )
