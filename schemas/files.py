"""Event files in the Event schema (JSONL, CSV, Parquet), read with the same validation as Kafka.

Shared by the trainer (history files) and the replay tool; invalid rows are counted, not fatal.
"""

from __future__ import annotations

import csv
from pathlib import Path

from schemas.codec import InvalidRecord, decode_event, validate
from schemas.records import Event


def read_event_file(path: Path) -> tuple[list[Event], int]:
    """Events from JSONL, CSV or Parquet in the Event schema; returns (valid, invalid count)."""
    rows: list[dict]
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        events, bad = [], 0
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        events.append(decode_event(line))
                    except InvalidRecord:
                        bad += 1
        return events, bad
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(fh)]
        for r in rows:  # CSV has no types: numbers come back as numbers
            for key in ("price", "rating", "ts"):
                if key in r:
                    try:
                        r[key] = float(r[key])
                    except ValueError:
                        pass
            if "quantity" in r:
                r["quantity"] = int(r["quantity"])
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [
            {k: v for k, v in r.items() if v is not None} for r in pq.read_table(path).to_pylist()
        ]
    else:
        raise ValueError(f"unknown event file type {path.suffix!r} (jsonl, csv or parquet)")
    events, bad = [], 0
    for r in rows:
        try:
            events.append(validate(Event, r))
        except InvalidRecord:
            bad += 1
    return events, bad
