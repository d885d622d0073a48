"""History loaders (MovieLens, event files, a topic's history) and sequences per EVAL_PROTOCOL.md.

Every source becomes the same thing: a list of :class:`Interaction` in source order, which
:func:`user_sequences` sorts per user by time with a stable sort (ties keep file order).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson

from models.contract import sha256_of
from schemas import records
from schemas.codec import InvalidRecord, decode_event
from schemas.files import (
    iter_catalog,
    iter_event_file,
    read_movielens_items,
    read_movielens_ratings,
    read_user_item_pairs,
)
from schemas.records import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Interaction:
    """The parts of an event the model learns from."""

    user_id: str
    item_id: str | None
    type: str
    ts: float
    event_id: str = ""
    fraud: bool | None = None  # None = no label


@dataclass
class History:
    """Interactions in source order, item descriptions for the language model, provenance, and
    the shop's own reviews that carry a rating (text, 1 when rated 4-5 or 0 when 1-2), which
    adapt the sentiment model to the shop's language. ``catalog_items`` are the items of the
    shop's catalog (:func:`with_catalog`): they join the vocabulary even when no one has
    interacted with them yet, ranked by their text."""

    interactions: list[Interaction]
    item_text: dict[str, str]
    source: str
    fingerprint: str
    rated_texts: list[tuple[str, int]] = field(default_factory=list)
    catalog_items: tuple[str, ...] = ()


def load_movielens(directory: Path) -> History:
    """MovieLens-100K: every rating is an interaction; titles + genres are the item text."""
    interactions = [
        Interaction(user, item, "rating", float(ts), f"ml{n}")
        for n, (user, item, _rating, ts) in enumerate(read_movielens_ratings(directory))
    ]
    item_text = {
        item: f"{meta.title}. Genres: {', '.join(meta.genres)}"
        for item, meta in read_movielens_items(directory).items()
    }
    fingerprint = sha256_of(directory / "u.data", directory / "u.item")
    return History(interactions, item_text, f"ml100k:{directory}", fingerprint)


PAIR_SPACING_SECONDS = 3600.0


def load_pairs(path: Path) -> History:
    """A ``user item`` file without times (e.g. Amazon Video from the SASRec repository): each
    user's events get times one hour apart in file order, so the file's order is the sequence
    order; no item text."""
    interactions = []
    position: dict[str, int] = defaultdict(int)
    for n, (user, item) in enumerate(read_user_item_pairs(path)):
        ts = position[user] * PAIR_SPACING_SECONDS
        position[user] += 1
        interactions.append(Interaction(user, item, "rating", ts, f"p{n}"))
    return History(interactions, {}, f"pairs:{path}", sha256_of(path))


def _labels(path: Path | None) -> dict[str, bool]:
    """event_id → fraud label from a JSONL file of {"event_id", "fraud"} lines."""
    if path is None:
        return {}
    out = {}
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                row = orjson.loads(line)
                out[str(row["event_id"])] = bool(row.get("fraud", row.get("label")))
    return out


def _from_events(events: Iterable[Event], labels: dict[str, bool], source: str, fingerprint: str):
    """The History of a list of events (file or topic)."""
    interactions, item_text, rated = [], {}, []
    for e in events:
        if e.text and e.rating is not None and e.rating != 3:
            rated.append((e.text, int(e.rating > 3)))
        interactions.append(
            Interaction(
                e.user_id,
                e.item_id,
                e.type.value,
                e.ts,
                e.event_id,
                labels.get(e.event_id) if labels else None,
            )
        )
        if e.item_id and e.item_id not in item_text:
            text = records.item_text(e.attrs.get("title"), e.attrs.get("category"))
            if text:
                item_text[e.item_id] = text
    return History(interactions, item_text, source, fingerprint, rated)


def load_event_file(path: Path, labels: Path | None = None) -> History:
    return _from_events(iter_event_file(path), _labels(labels), f"file:{path}", sha256_of(path))


async def _read_history(settings, topic: str) -> list[Event]:
    from schemas.kafka_security import topic_partitions, topic_reader

    partitions = await topic_partitions(settings, topic)
    if not partitions:
        raise ValueError(f"topic {topic!r} does not exist")
    consumer = topic_reader(settings)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        events: list[Event] = []
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp]:
                        try:
                            events.append(decode_event(r.value))
                        except InvalidRecord:
                            pass
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return events
    finally:
        await consumer.stop()


def load_topic(settings, topic: str, labels: Path | None = None) -> History:
    """The history in ``topic``, from the earliest offset to the end offsets at call time."""
    events = asyncio.run(_read_history(settings, topic))
    digest = hashlib.sha256(b"".join(e.event_id.encode() + b"\0" for e in events)).hexdigest()
    return _from_events(events, _labels(labels), f"topic:{topic}", digest)


def with_catalog(history: History, path: Path) -> History:
    """``history`` with the catalog file's items (JSONL or CSV, as ``foresight catalog
    publish`` reads it; a file with invalid rows is refused whole): every item joins the
    vocabulary, and its catalog text replaces what events said of it. The catalog is part of
    the provenance, so a changed catalog is a different training set."""
    text = dict(history.item_text)
    ids = []
    for item in iter_catalog(path):
        text[item.item_id] = item.text()
        ids.append(item.item_id)
    fingerprint = hashlib.sha256(f"{history.fingerprint}+{sha256_of(path)}".encode()).hexdigest()
    return replace(
        history,
        item_text=text,
        source=f"{history.source}+catalog:{path}",
        fingerprint=fingerprint,
        catalog_items=tuple(ids),
    )


def load(spec: str, settings=None, labels: Path | None = None) -> History:
    """``ml100k:DIR`` | ``pairs:FILE`` | ``jsonl:FILE`` | ``csv:FILE`` | ``parquet:FILE`` |
    ``topic:NAME``."""
    kind, _, target = spec.partition(":")
    if kind == "ml100k":
        return load_movielens(Path(target))
    if kind == "pairs":
        return load_pairs(Path(target))
    if kind in ("jsonl", "csv", "parquet", "file"):
        return load_event_file(Path(target), labels)
    if kind == "topic":
        if settings is None:
            raise ValueError("reading a topic needs settings")
        return load_topic(
            settings, settings.topic(target) if target == "events" else target, labels
        )
    raise ValueError(
        f"unknown data spec {spec!r}: use ml100k:DIR, pairs:FILE, jsonl:FILE or topic:NAME"
    )


def user_sequences(interactions: list[Interaction]) -> dict[str, list[Interaction]]:
    """One sequence per user sorted by time; ties keep source order (Python's sort is stable)."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for x in interactions:
        by_user[x.user_id].append(x)
    return {u: sorted(seq, key=lambda x: x.ts) for u, seq in by_user.items()}
