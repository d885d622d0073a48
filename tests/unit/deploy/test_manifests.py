"""Everything in deploy/ checked offline: Kubernetes overlays against the Kubernetes, KEDA and
Prometheus-operator schemas, Dockerfiles linted, compose parsed by docker compose, alert
rules checked and unit-tested with promtool, the dashboard's queries against the worker's
metrics, and every setting, file and command the files name against what exists.

The Go tools come from `make tools` (.tools/bin); the others are dev dependencies. A missing
tool fails the test: a check that did not run is not a check that passed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import kubernetes_validate
import pytest
import yaml

from schemas.settings import Settings
from workers import app as _worker_app  # noqa: F401 (registers every worker metric)
from workers import metrics
from workers.cli import main as foresight_cli

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OBSERVABILITY = DEPLOY / "observability"
KUBERNETES_VERSION = "1.34.0"
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile.*"))


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{REPO / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    found = found or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"`{name}` is not installed: run `make tools` (Go) or `make setup`"
    return found


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def build(overlay: str) -> list[dict]:
    built = run(tool("kustomize"), "build", str(K8S / "overlays" / overlay))
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def kubeconform(path: Path) -> subprocess.CompletedProcess:
    """kubeconform, strict, with the vendored CRD schemas only (no network)."""
    return run(
        tool("kubeconform"),
        "-strict",
        "-summary",
        "-schema-location",
        str(K8S / "schemas" / "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
        str(path),
    )


def validate(documents: list[dict], tmp_path: Path) -> None:
    """Core kinds with kubernetes-validate (its bundled schemas), CRDs with kubeconform."""
    custom = [doc for doc in documents if doc["kind"] in CRD_KINDS]
    for doc in documents:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    crds = tmp_path / "crds.yaml"
    crds.write_text(yaml.safe_dump_all(custom))
    checked = kubeconform(crds)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"Valid: {len(custom)}, Invalid: 0, Errors: 0" in checked.stdout, checked.stdout


def by_kind(documents: list[dict], kind: str) -> dict:
    [doc] = [d for d in documents if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlays_build_and_validate(overlay: str, tmp_path: Path) -> None:
    documents = build(overlay)
    kinds = {doc["kind"] for doc in documents}
    assert kinds >= {
        "StatefulSet",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
        "CronJob",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "NetworkPolicy",
        "ConfigMap",
        "Service",
    }
    validate(documents, tmp_path)
    worker = by_kind(documents, "StatefulSet")["spec"]["template"]["spec"]
    [container] = worker["containers"]
    limits = container["resources"].get("limits", {})
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1 and "worker-gpu" in container["image"]
        assert worker["tolerations"][0]["key"] == "nvidia.com/gpu" and worker["nodeSelector"]
    else:
        assert "nvidia.com/gpu" not in limits and "worker-gpu" not in container["image"]


def test_the_validators_refuse_broken_manifests(tmp_path: Path) -> None:
    documents = build("cpu")
    statefulset = by_kind(documents, "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)
    scaled = by_kind(documents, "ScaledObject")
    scaled["spec"]["maxReplicas"] = 12  # the field is maxReplicaCount
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(scaled))
    assert kubeconform(broken).returncode != 0


def test_autoscaling_matches_the_workers_settings() -> None:
    documents = build("cpu")
    settings = by_kind(documents, "ConfigMap")["data"]
    scaled = by_kind(documents, "ScaledObject")["spec"]
    [trigger] = scaled["triggers"]
    assert scaled["maxReplicaCount"] == int(settings["FORESIGHT_PARTITIONS"])
    assert trigger["metadata"]["consumerGroup"] == settings["FORESIGHT_APP_ID"]
    assert trigger["metadata"]["topic"] == "events"
    assert trigger["metadata"]["bootstrapServers"] in settings["FORESIGHT_BROKER"]
    assert scaled["scaleTargetRef"]["name"] == by_kind(documents, "StatefulSet")["metadata"]["name"]


def test_probes_and_grace_period_match_the_worker() -> None:
    documents = build("cpu")
    settings = by_kind(documents, "ConfigMap")["data"]
    [container] = by_kind(documents, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(settings["FORESIGHT_METRICS_PORT"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    pod = by_kind(documents, "StatefulSet")["spec"]["template"]["spec"]
    # the worker's own grace period ends before Kubernetes' SIGKILL
    assert (
        float(settings["FORESIGHT_SHUTDOWN_GRACE_SECONDS"]) < pod["terminationGracePeriodSeconds"]
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean(dockerfile: Path) -> None:
    linted = run(tool("hadolint"), "--config", str(DEPLOY / ".hadolint.yaml"), str(dockerfile))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    text = dockerfile.read_text()
    assert "\nUSER 10001" in text and "\nHEALTHCHECK" in text
    assert text.count("\nFROM ") == 2  # build stage + runtime stage
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"{dockerfile.name} copies {path}, which does not exist"


def test_worker_images_carry_no_torch_and_no_dev_tools() -> None:
    for variant in ("cpu", "gpu"):
        lock = (DEPLOY / "requirements" / f"worker-{variant}.txt").read_text()
        for package in ("torch", "transformers", "pytest", "ruff", "mypy", "playwright"):
            assert not re.search(rf"^{package}==", lock, re.M), package
        assert re.search(
            r"^onnxruntime-gpu==" if variant == "gpu" else r"^onnxruntime==", lock, re.M
        )
    for name in ("Dockerfile.worker", "Dockerfile.worker-gpu"):
        assert "rm -rf workers/tools" in (DEPLOY / name).read_text()
        assert "--require-hashes" in (DEPLOY / name).read_text()


def test_compose_checks_refuse_a_broken_file(tmp_path: Path) -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    spec["services"]["worker-1"]["restartt"] = "always"
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(spec))
    assert run(tool("docker-compose"), "-f", str(broken), "config", "--quiet").returncode != 0


def test_compose_file_follows_the_compose_spec_and_names_real_files() -> None:
    compose = DEPLOY / "compose.yaml"
    parsed = run(tool("docker-compose"), "-f", str(compose), "config", "--quiet")  # no engine
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    spec = yaml.safe_load(compose.read_text())
    services = spec["services"]
    assert {"kafka", "topics", "worker-1", "worker-2", "trainer", "prometheus", "grafana"} <= set(
        services
    )
    for name, service in services.items():
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (DEPLOY / host).exists(), f"{name} mounts {host}, which does not exist"
            else:
                assert host in spec["volumes"], f"{name} mounts undeclared volume {host}"
    scrape = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    port = services["worker-1"]["environment"]["FORESIGHT_METRICS_PORT"]
    assert sorted(targets) == [f"worker-1:{port}", f"worker-2:{port}"]


def test_alert_rules_check_and_their_unit_tests_pass() -> None:
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", "alerts.yaml", cwd=OBSERVABILITY)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", "alerts.test.yaml", cwd=OBSERVABILITY)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert {
        "ForesightConsumerLagGrowing",
        "ForesightDeadLetterRate",
        "ForesightPartitionStalled",
        "ForesightModelRefused",
    } <= alerts
    readme = (REPO / "README.md").read_text()
    for alert in alerts:  # the runbook the rules point at says what each one means
        assert f"`{alert}`" in readme, alert


def worker_series() -> set[str]:
    """Every series name the worker's /metrics can expose."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in suffixes[family.type]
    }


def dashboard_queries() -> list[str]:
    dashboard = json.loads(
        (OBSERVABILITY / "grafana" / "dashboards" / "foresight.json").read_text()
    )
    assert dashboard["panels"]
    queries = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        queries += [target["expr"] for target in panel["targets"]]
    return queries


def test_every_dashboard_and_alert_query_reads_metrics_the_worker_exposes(tmp_path: Path) -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    queries = dashboard_queries() + [r["expr"] for g in rules["groups"] for r in g["rules"]]
    known = worker_series()
    used = {name for query in queries for name in re.findall(r"\bforesight_[a-z_]+", query)}
    assert used and used <= known, f"not exposed by the worker: {sorted(used - known)}"
    wanted = {  # what the dashboard must show
        "foresight_events_in_total",
        "foresight_events_scored_total",
        "foresight_dlq_total",
        "foresight_end_to_end_seconds_bucket",
        "foresight_batch_size_bucket",
        "foresight_inference_seconds_bucket",
        "foresight_stage_seconds_bucket",
        "foresight_consumer_lag",
        "foresight_alerts_total",
        "foresight_model_info",
        "foresight_partition_stalled",
    }
    assert wanted <= {n for q in dashboard_queries() for n in re.findall(r"foresight_[a-z_]+", q)}
    # and every dashboard query is valid PromQL: promtool parses them as recording rules
    recording = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(recording))
    parsed = run(tool("promtool"), "check", "rules", str(tmp_path / "queries.yaml"))
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr


def deploy_files() -> list[Path]:
    return [
        p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix not in {".json", ".py", ".txt"}
    ]


def test_every_setting_named_in_deploy_exists() -> None:
    fields = set(Settings.model_fields)
    named = {
        (path.relative_to(REPO), name)
        for path in deploy_files()
        for name in re.findall(r"\bFORESIGHT_([A-Z0-9_]+)", path.read_text())
    }
    assert named  # the pattern does find them
    unknown = sorted(
        f"{path}: FORESIGHT_{name}" for path, name in named if name.lower() not in fields
    )
    assert unknown == [], "settings that schemas/settings.py does not have"


def cli_accepts(args: list[str]) -> None:
    """Parse ``args`` as `foresight` would, down to the subcommand, without running it."""
    command: click.Command = foresight_cli
    context = command.make_context("foresight", list(args))
    while isinstance(command, click.Group) and context.protected_args + context.args:
        name, sub, rest = command.resolve_command(context, context.protected_args + context.args)
        assert sub is not None, args
        command, context = sub, sub.make_context(name, rest, parent=context)


def test_every_command_the_deployments_run_is_a_real_cli_command() -> None:
    commands = []
    for overlay in ("cpu", "gpu"):
        for doc in build(overlay):
            spec = doc.get("spec", {})
            pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template"))
            for container in (pod or {}).get("spec", {}).get("containers", []):
                commands.append(container["args"])
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    commands += [s["command"] for s in compose.values() if "command" in s]
    for dockerfile in DOCKERFILES:
        commands.append(json.loads(re.search(r"^CMD (\[.*\])$", dockerfile.read_text(), re.M)[1]))
    assert len(commands) >= 8
    for args in commands:
        cli_accepts(args)
    with pytest.raises(click.UsageError):
        cli_accepts(["train", "--data", "topic:events", "--epoch", "5"])  # a typo is caught
