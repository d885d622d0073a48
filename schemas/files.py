"""Files we read events from: event files in the Event schema (JSONL, CSV, Parquet, with the
same validation as Kafka) and the MovieLens-100K layout, shared by the trainer and the replay
tool (invalid rows are counted, not fatal); and catalog files, shared by the trainer and
``foresight catalog publish`` (a file with invalid rows is refused whole).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import ValidationError

from schemas.codec import InvalidRecord, decode_event, validate
from schemas.records import CatalogItem, Event

log = logging.getLogger(__name__)


def read_event_file(path: Path) -> list[Event]:
    """The valid events of a JSONL, CSV or Parquet file in the Event schema."""
    return list(iter_event_file(path))


def iter_event_file(path: Path) -> Iterator[Event]:
    """The valid events of an event file one at a time (a JSONL file of millions of events is
    never held as Event objects all at once); the invalid rows are counted in a warning."""
    invalid = 0
    for event in _rows(path):
        if event is None:
            invalid += 1
        else:
            yield event
    if invalid:
        log.warning("%s: skipped %d invalid events", path, invalid)


def _rows(path: Path) -> Iterator[Event | None]:
    """Each row of an event file, validated; None for an invalid one."""
    rows: list[dict]
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        yield decode_event(line)
                    except InvalidRecord:
                        yield None
        return
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
    for r in rows:
        try:
            yield validate(Event, r)
        except InvalidRecord:
            yield None


MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class MovieLensItem:
    """One line of u.item: title and genres."""

    title: str
    genres: tuple[str, ...]


def read_movielens_items(directory: Path) -> dict[str, MovieLensItem]:
    """u.item (latin-1): item id → title and genres."""
    items = {}
    with open(directory / "u.item", encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            flags = zip(MOVIELENS_GENRES, parts[5:], strict=False)
            items[parts[0]] = MovieLensItem(parts[1], tuple(g for g, f in flags if f == "1"))
    return items


def read_movielens_ratings(directory: Path) -> list[tuple[str, str, int, int]]:
    """u.data in file order: (user, item, rating, unix time)."""
    rows = []
    with open(directory / "u.data", encoding="ascii") as fh:
        for line in fh:
            user, item, rating, ts = line.rstrip("\n").split("\t")
            rows.append((user, item, int(rating), int(ts)))
    return rows


def read_user_item_pairs(path: Path) -> list[tuple[str, str]]:
    """A ``user item`` pair a line, each user's lines in time order (the SASRec data format)."""
    rows = []
    with open(path, encoding="ascii") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected 'user item', got {line.strip()!r}")
            rows.append((fields[0], fields[1]))
    return rows


# --- catalog files -----------------------------------------------------------------------------
CATALOG_FIELDS = ("item_id", "title", "category", "description")


class CatalogFileError(ValueError):
    """Rows that are not catalog items; the message lists them."""


def _catalog_rows(path: Path):
    """(line number, raw row dict) for each row of a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                attrs = {k: v for k, v in row.items() if k not in CATALOG_FIELDS and v}
                fields = {k: row[k] for k in CATALOG_FIELDS if row.get(k)}
                yield line, {**fields, "attrs": attrs}
        return
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if raw.strip():
                try:
                    yield line, orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    yield line, exc


def read_catalog(path: Path, max_errors: int = 10) -> list[CatalogItem]:
    """Every item of ``path``; raises :class:`CatalogFileError` if any row is invalid."""
    return list(iter_catalog(path, max_errors))


def iter_catalog(path: Path, max_errors: int = 10) -> Iterator[CatalogItem]:
    """The items of ``path`` one at a time (a million-item catalog is never held as objects
    all at once); after the last row, raises :class:`CatalogFileError` if any row was invalid,
    so a caller that uses the items only once the iteration ends never uses a bad file."""
    errors: list[str] = []
    bad = 0
    for line, row in _catalog_rows(path):
        try:
            if isinstance(row, Exception):
                raise ValueError(f"not JSON: {row}")
            item = CatalogItem.model_validate(row)
        except (ValidationError, ValueError) as exc:
            bad += 1
            if len(errors) < max_errors:
                errors.append(f"line {line}: {str(exc).splitlines()[0]}")
            continue
        yield item
    if bad:
        raise CatalogFileError(f"{path}: {bad} invalid catalog rows\n" + "\n".join(errors))
