"""Item and event-type vocabularies, stored as JSON beside the model.

Item indices follow the natural order of the ids (numeric when every id is a number, as in
MovieLens), so "smaller id" in the evaluation tie rule is simply "smaller index".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import orjson

from models.contract import NO_ITEM, SPECIAL_ITEMS, UNKNOWN_ITEM
from schemas.records import EventType

EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


def _id_order(ids: list[str]) -> list[str]:
    if all(i.isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


@dataclass(frozen=True)
class Vocab:
    """Index ↔ id maps for items (the reserved slots of models/contract.py first) and event
    types (index 0 = padding)."""

    items: tuple[str, ...]
    item_text: dict[str, str] = field(default_factory=dict)
    types: tuple[str, ...] = EVENT_TYPES

    @classmethod
    def build(cls, item_ids: list[str], item_text: dict[str, str] | None = None) -> Vocab:
        return cls(tuple(_id_order(sorted(set(item_ids)))), dict(item_text or {}))

    @property
    def n_items(self) -> int:
        """Rows of the item table (reserved slots included)."""
        return len(self.items) + len(SPECIAL_ITEMS)

    @property
    def n_types(self) -> int:
        """Rows of the type table (index 0 = padding)."""
        return len(self.types) + 1

    def item_index(self, item_id: str | None) -> int:
        if item_id is None:
            return NO_ITEM
        return self._item_lookup.get(item_id, UNKNOWN_ITEM)

    def type_index(self, event_type: str) -> int:
        return self._type_lookup[event_type]

    def item_id(self, index: int) -> str:
        return self.items[index - len(SPECIAL_ITEMS)]

    @cached_property
    def _item_lookup(self) -> dict[str, int]:
        return {item: i + len(SPECIAL_ITEMS) for i, item in enumerate(self.items)}

    @cached_property
    def _type_lookup(self) -> dict[str, int]:
        return {t: i + 1 for i, t in enumerate(self.types)}

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "special_items": list(SPECIAL_ITEMS),
                "items": list(self.items),
                "types": list(self.types),
                "item_text": self.item_text,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_json(cls, raw: bytes, texts: bool = True) -> Vocab:
        """The vocabulary in ``raw``; ``texts=False`` leaves out the item texts, which record
        what the model was trained on but which scoring never reads (a million-item catalog's
        texts would cost each serving process hundreds of MB)."""
        obj = orjson.loads(raw)
        if tuple(obj["special_items"]) != SPECIAL_ITEMS:
            raise ValueError("vocab.json reserves different special item slots")
        item_text = dict(obj.get("item_text", {})) if texts else {}
        return cls(tuple(obj["items"]), item_text, tuple(obj["types"]))

    def save(self, path: Path) -> None:
        path.write_bytes(self.to_json())

    @classmethod
    def load(cls, path: Path, texts: bool = True) -> Vocab:
        return cls.from_json(path.read_bytes(), texts)

    def hashes(self) -> dict[str, str]:
        """sha256 of the item and type lists: the manifest pins the vocabulary with these."""

        def digest(values: tuple[str, ...]) -> str:
            return hashlib.sha256(orjson.dumps(list(values))).hexdigest()

        return {"items": digest(self.items), "types": digest(self.types)}
