"""One frozen, typed settings object read from ``FORESIGHT_*`` environment variables.

Every process (worker, trainer, CLI, tests) reads its configuration here and nowhere else, so a
deployment is described completely by its environment. Secrets are ``SecretStr``: they print as
``**********`` and never reach a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]

#: Base names of every topic in DESIGN.md; the real name is ``topic_prefix + base``.
#: ``trends.partial`` and ``sequences.expire`` are internal to the worker (two-phase trend
#: aggregation across workers; inactivity expiry routed to the partition that owns the user).
TOPIC_BASES = (
    "events",
    "events.dlq",
    "predictions",
    "alerts",
    "trends",
    "models.control",
    "catalog",
    "trends.partial",
    "sequences.expire",
)


class SettingsError(ValueError):
    """A configuration that must not be run (for example SASL credentials over plaintext)."""


class Settings(BaseSettings):
    """Foresight configuration. Each field documents its type, default and meaning."""

    model_config = SettingsConfigDict(env_prefix="FORESIGHT_", frozen=True, extra="ignore")

    # --- Kafka -------------------------------------------------------------------------------
    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="Bootstrap servers as a Faust URL, e.g. kafka://h1:9092;h2:9092.",
    )
    topic_prefix: str = Field("", description="Prepended to every topic name (e.g. 'acme.').")
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of topics we create.")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication of created topics.")
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=30_000,
        description="Longest the broker holds one of the worker's fetches open waiting for "
        "data. A fetch asks only for the partitions with nothing buffered, and while it is open "
        "no other partition is fetched, so a partition whose buffer runs dry waits up to this "
        "long; Faust's own 1,500 ms stalled a worker at 7,600 events/s for ~1 s at a time "
        "(foresight bench).",
    )
    fetch_bytes_per_partition: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Most bytes one fetch returns per partition. The worker's one consumer "
        "reads every topic it holds partitions of (events, the table's changelog for recovery "
        "and standbys, trend partials) and buffers up to this much for each such partition; "
        "below 2 MiB a worker catching up on a backlog ran 20-30% slower (foresight bench).",
    )
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security protocol.")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certs.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mTLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mTLS).")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client key.")
    sasl_mechanism: SaslMechanism = Field("SCRAM-SHA-512", description="SASL mechanism.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    dev_mode: bool = Field(
        False, description="Allows unsafe dev-only setups such as SASL without TLS."
    )

    # --- Local broker (development, tests, demo, bench) -----------------------------------------
    broker_port: int = Field(9092, ge=1, le=65535, description="Port of the local dev broker.")
    home: Path = Field(
        Path.home() / ".cache" / "foresight",
        description="Cache for Kafka jars and the local broker's data and logs.",
    )
    maven_repository: str = Field(
        "https://repo1.maven.org/maven2",
        description="Maven repository the local broker's jars are fetched from (a mirror "
        "serving Maven Central's paths); each jar is checked against the lock's sha256.",
    )

    ml100k_path: Path = Field(
        Path("../shared/data/ml-100k"),
        description="A MovieLens-100K copy for the demo (never inside the repo; optional).",
    )
    sst2_path: Path = Field(
        Path("../shared/data/sst2"),
        description="Labelled sentences (train.tsv, dev.tsv) the demo's first model fine-tunes "
        "its sentiment model on (never inside the repo; optional: without them the demo's "
        "model has none and sentiment falls back to the lexicon).",
    )

    # --- Worker ------------------------------------------------------------------------------
    app_id: str = Field("foresight", description="Faust app id = Kafka consumer group.")
    store: str = Field("rocksdb://", description="Table store URL: rocksdb:// or memory://.")
    data_dir: Path = Field(Path(".foresight"), description="Worker state (RocksDB) directory.")
    registry: Path = Field(Path("registry"), description="Model registry directory.")
    batch_size: int = Field(256, ge=1, le=8192, description="Max sequences per scoring batch.")
    batch_max_wait_ms: float = Field(
        20.0,
        ge=0,
        le=10_000,
        description="Max time the first event of a batch waits while the scoring "
        "process is busy (a batch closes at once when it is free).",
    )
    window_seconds: float = Field(
        86_400.0, gt=0, description="Sequence time window: older events fall out."
    )
    max_sequence_length: int = Field(50, ge=2, le=512, description="Max events per sequence.")
    inactivity_expiry_seconds: float = Field(
        30 * 86_400.0, gt=0, description="Users idle this long are dropped from the table."
    )
    top_k: int = Field(10, ge=1, le=1000, description="Next items returned per prediction.")
    risk_threshold: float = Field(0.8, ge=0, le=1, description="Risk above this raises an alert.")
    surprise_threshold: float = Field(
        0.995,
        ge=0,
        le=1,
        description="Anomaly alert above this calibrated surprise (the share of normal "
        "held-out events that were less surprising).",
    )
    anomaly_alerts: bool = Field(
        True, description="Raise label-free anomaly alerts from calibrated surprise."
    )
    alert_cooldown_seconds: float = Field(
        600.0, ge=0, description="Min time between two alerts of the same kind for one user."
    )
    trend_window_seconds: float = Field(300.0, gt=0, description="Width of a trend window.")
    trend_flush_seconds: float = Field(
        0.1,
        gt=0,
        le=60,
        description="How often a worker sends its trend partials and event-time watermark to "
        "the workers that merge them. Each flush is merged in one go on the event loop and "
        "holds up the events behind it: every 1 s, that hold-up was most of the p99 at half "
        "load (docs/benchmark-history.md). A longer interval sends fewer, larger records.",
    )
    trend_max_keys: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Trend keys (items, categories) whose history a worker remembers; beyond "
        "it the key updated longest ago is forgotten (its z-score history starts again). "
        "Bounds the trend state: a few hundred bytes a key.",
    )
    sweep_interval_seconds: float = Field(
        60.0, gt=0, description="How often idle users are looked for and expired."
    )
    processing_guarantee: ProcessingGuarantee = Field(
        "at_least_once",
        description="at_least_once: an output is published as soon as it is built, and a crash "
        "publishes again what came after the last commit. exactly_once: each input partition's "
        "outputs (predictions, alerts, DLQ, changelog) and its consumed offsets commit in one "
        "Kafka transaction, so a read_committed reader sees every event's outputs once, crash "
        "or not; outputs become visible at each commit, a few milliseconds later.",
    )
    transaction_interval_ms: float = Field(
        100.0,
        ge=0,
        le=60_000,
        description="exactly_once only: the least time between the starts of two transactions "
        "of one input partition. Longer means fewer, larger transactions (less broker work per "
        "event) and outputs visible later.",
    )
    publish_timeout_seconds: float = Field(
        120.0,
        ge=1,
        le=3600,
        description=(
            "How long an output the broker does not take (an outage, a leader election) is "
            "retried in place, in order per partition, before the worker gives up and exits "
            "with code 75 so that its orchestrator restarts it."
        ),
    )
    session_timeout_seconds: float = Field(
        60.0,
        ge=6,
        le=1800,
        description="Kafka consumer-group session timeout: a worker that dies without leaving "
        "(kill -9, a lost node) has its partitions handed to the others after this long. "
        "Heartbeats go every 3 s; the broker's group.min.session.timeout.ms (6 s) bounds it.",
    )
    shutdown_grace_seconds: float = Field(
        20.0,
        ge=1,
        le=3600,
        description="On SIGTERM the worker stops fetching, finishes and publishes the batches "
        "it holds, commits and exits 0 within this many seconds; past it, it exits with code "
        "71 (what it did not finish is delivered again). Keep it below the orchestrator's "
        "own grace period (Kubernetes: 30 s).",
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description="The worker's event loop: Python's own asyncio loop, or uvloop (libuv, in "
        "C), whose scheduling and socket I/O cost 3-6% less of the event loop's core per event. "
        "Its p99 at 10% load in the bench, over 100 ms in 9 of 14 runs before a fetch stall was "
        "fixed, is now 21-24 ms, but at half load it was no better than asyncio's "
        "(docs/benchmark-history.md), so it is not the default.",
    )
    scoring_threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads.")
    scoring_precision: Literal["auto", "fp32"] = Field(
        "auto",
        description="auto: on a CPU-only machine serve the artifact's int8 graph where it has "
        "one (kept by the trainer only if its validation NDCG@10 is within 0.002 of fp32's); "
        "fp32: always the fp32 graph, whose scores do not depend on the other sequences in a "
        "batch (int8's move by up to about 2e-3 with them).",
    )
    catalog_max_items: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="Catalog items (from the catalog topic, not known to the served model) "
        "kept rankable; the oldest published beyond it are forgotten. Bounds the worker's "
        "memory for them: about (text + 4·hidden bytes) per item and model kept.",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port of /metrics (Prometheus), /healthz and /readyz; 0 = off.",
    )
    stall_seconds: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="A partition of `events` with lag whose committed offset has not moved for "
        "this long makes the worker not ready (/readyz 503); after twice this long the worker "
        "exits with code 70 so that its orchestrator restarts it.",
    )

    @model_validator(mode="after")
    def _refuse_unsafe_auth(self) -> Settings:
        if self.security_protocol == "SASL_PLAINTEXT" and not self.dev_mode:
            raise SettingsError(
                "SASL over PLAINTEXT sends credentials unencrypted; use SASL_SSL, "
                "or set FORESIGHT_DEV_MODE=1 for a local test cluster"
            )
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise SettingsError("SASL needs FORESIGHT_SASL_USERNAME and FORESIGHT_SASL_PASSWORD")
        return self

    def topic(self, base: str) -> str:
        """Full topic name for a base name of DESIGN.md."""
        if base not in TOPIC_BASES:
            raise KeyError(f"unknown topic {base!r}; known: {', '.join(TOPIC_BASES)}")
        return f"{self.topic_prefix}{base}"

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` list for plain aiokafka clients."""
        hosts = self.broker.split("://", 1)[-1]
        return [h.strip() for h in hosts.replace(",", ";").split(";") if h.strip()]


def settings_or_exit() -> Settings:
    """The settings from ``FORESIGHT_*``, or exit with the reason (for commands: a
    configuration mistake deserves one line, not a traceback)."""
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError or SettingsError
        raise SystemExit(f"Error: bad FORESIGHT_* configuration: {exc}") from None
