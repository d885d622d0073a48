"""Writes and checks the JSON Schema files under ``schemas/json/`` for non-Python consumers.

The files are generated from the pydantic records; ``python -m schemas.jsonschema`` rewrites them
and ``--check`` (run by the tests) fails when the committed files drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from schemas.internal import INTERNAL_TYPES
from schemas.records import RECORD_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent / "json"


def render() -> dict[str, bytes]:
    """File name → JSON Schema bytes, for every record type, public and internal."""
    out = {}
    for name, model in {**RECORD_TYPES, **INTERNAL_TYPES}.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
        schema.update(model.model_json_schema(mode="validation"))
        out[f"{name}.schema.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def drift() -> list[str]:
    """Names of schema files that are missing or differ from what the code generates."""
    return [
        name
        for name, data in render().items()
        if not (SCHEMA_DIR / name).exists() or (SCHEMA_DIR / name).read_bytes() != data
    ]


def write() -> None:
    """(Re)generate every schema file."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, data in render().items():
        (SCHEMA_DIR / name).write_bytes(data)


if __name__ == "__main__":
    if "--check" in sys.argv:
        stale = drift()
        if stale:
            sys.exit(f"stale JSON Schemas (run python -m schemas.jsonschema): {stale}")
    else:
        write()
