"""Vendor the JSON Schemas of the custom resources the manifests use, so CI validates offline.

    python deploy/k8s/schemas/vendor_crds.py

Takes each CRD from its project's Go module (through the Go module proxy: `go mod download`),
turns every served version's openAPIV3Schema into a strict JSON Schema (unknown fields refused
unless the CRD preserves them) and writes it where kubeconform's schema-location template
`{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` finds it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CRDS = {  # Go module@version → CRD files inside it
    "github.com/kedacore/keda/v2@v2.21.0": [
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
    ],
    "github.com/prometheus-operator/prometheus-operator@v0.85.0": [
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    ],
}


def strict(schema: dict) -> dict:
    """Refuse unknown fields wherever the CRD lists its fields and does not preserve others."""
    for child in schema.get("properties", {}).values():
        strict(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key, []):
            strict(child)
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


def module_dir(module: str) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            ["go", "mod", "init", "vendor"], cwd=scratch, check=True, capture_output=True
        )
        out = subprocess.run(
            ["go", "mod", "download", "-json", module],
            cwd=scratch,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return Path(json.loads(out)["Dir"])


def main() -> None:
    for module, files in CRDS.items():
        root = module_dir(module)
        for name in files:
            crd = yaml.safe_load((root / name).read_text())
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}
                schema["x-vendored-from"] = f"{module} {name}"
                target = HERE / group / f"{kind}_{version['name']}.json"
                target.parent.mkdir(exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(target.relative_to(HERE))


if __name__ == "__main__":
    main()
