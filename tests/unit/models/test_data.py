"""History loaders and the per-user sequences of EVAL_PROTOCOL.md."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.data import Interaction, load, user_sequences, with_catalog
from models.text import item_text_table
from models.train import build_dataset
from models.vocab import Vocab
from schemas.files import CatalogFileError

ROWS = [
    {"event_id": "a", "user_id": "u1", "type": "view", "ts": 1_700_000_020, "item_id": "i2"},
    {
        "event_id": "b",
        "user_id": "u1",
        "type": "purchase",
        "ts": 1_700_000_010,
        "item_id": "i1",
        "price": 9.5,
    },
    {"event_id": "c", "user_id": "u2", "type": "login", "ts": 1_700_000_010},
]


def _write(tmp: Path, kind: str) -> Path:
    path = tmp / f"events.{kind}"
    if kind == "jsonl":
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in [*ROWS, {"bad": 1}]) + b"\n")
    elif kind == "csv":
        fields = sorted({k for r in ROWS for k in r})
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(ROWS)
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


def test_event_files_load_alike(tmp_path: Path) -> None:
    loaded = [load(f"{kind}:{_write(tmp_path, kind)}") for kind in ("jsonl", "csv", "parquet")]
    for history in loaded:
        assert [(x.event_id, x.item_id, x.type, x.ts) for x in history.interactions] == [
            ("a", "i2", "view", 1_700_000_020.0),
            ("b", "i1", "purchase", 1_700_000_010.0),
            ("c", None, "login", 1_700_000_010.0),
        ]


def test_labels_attach_to_events(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b'{"event_id": "b", "fraud": true}\n{"event_id": "a", "fraud": false}\n')
    history = load(f"jsonl:{_write(tmp_path, 'jsonl')}", labels=labels)
    assert [x.fraud for x in history.interactions] == [False, True, None]


def test_sequences_sorted_by_time_ties_keep_file_order() -> None:
    xs = [
        Interaction("u", "3", "rating", 5.0),
        Interaction("u", "1", "rating", 2.0),
        Interaction("u", "2", "rating", 5.0),
        Interaction("v", "9", "rating", 1.0),
    ]
    assert [x.item_id for x in user_sequences(xs)["u"]] == ["1", "3", "2"]


def test_vocab_orders_numeric_ids_numerically_and_round_trips() -> None:
    vocab = Vocab.build(["10", "9", "100", "9"], {"9": "Nine"})
    assert vocab.items == ("9", "10", "100")
    assert vocab.item_index("9") < vocab.item_index("10") < vocab.item_index("100")
    assert vocab.item_index(None) == 1 and vocab.item_index("nope") == 2
    again = Vocab.from_json(vocab.to_json())
    assert again == vocab and again.hashes() == vocab.hashes()
    serving = Vocab.from_json(vocab.to_json(), texts=False)  # what a scoring process loads
    assert serving.items == vocab.items and serving.hashes() == vocab.hashes()
    assert serving.item_text == {}


def test_user_item_pairs_keep_file_order_an_hour_apart(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1 30\n2 7\n1 10\n\n1 30\n")
    history = load(f"pairs:{path}")
    seqs = user_sequences(history.interactions)
    assert [x.item_id for x in seqs["1"]] == ["30", "10", "30"]
    assert [x.ts for x in seqs["1"]] == [0.0, 3600.0, 7200.0]
    assert history.item_text == {} and history.source == f"pairs:{path}"
    path.write_text("1 30 5\n")
    with pytest.raises(ValueError, match="expected 'user item'"):
        load(f"pairs:{path}")


def test_a_catalog_brings_in_items_no_one_has_touched(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(
        b'{"item_id": "i1", "title": "kettle", "category": "home"}\n'
        b'{"item_id": "i9", "title": "garden hose"}\n'
    )
    history = load(f"jsonl:{_write(tmp_path, 'jsonl')}")
    full = with_catalog(history, catalog)
    assert full.catalog_items == ("i1", "i9")
    assert full.item_text == {"i1": "kettle home", "i9": "garden hose"}
    assert full.fingerprint != history.fingerprint and full.source.endswith(f"catalog:{catalog}")
    assert build_dataset(history).vocab.items == ("i1", "i2")
    data = build_dataset(full)
    assert data.vocab.items == ("i1", "i2", "i9")
    rows = data.text_of_item[[data.vocab.item_index(i) for i in data.vocab.items]]
    has_text = [bool(data.text_raw[r].any()) for r in rows]
    assert has_text == [True, False, True]


def test_a_catalog_with_a_bad_row_is_refused(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(b'{"item_id": "i1", "title": "kettle"}\n{"item_id": "i9"}\n')
    with pytest.raises(CatalogFileError, match="line 2"):
        with_catalog(load(f"jsonl:{_write(tmp_path, 'jsonl')}"), catalog)


def test_item_texts_are_embedded_once_per_distinct_text() -> None:
    ids = ["a", "b", "c", "d", "e"]
    texts = {"a": "red kettle", "b": "blue lamp", "c": "red kettle", "e": "red kettle"}
    white, raw, of_item, whitening = item_text_table(ids, texts, 2)
    assert white.shape == raw.shape == (3, 384) and whitening is not None
    assert of_item.tolist() == [0, 0, 1, 2, 1, 0, 1]  # reserved slots and "d" on the zero row
    assert not raw[0].any() and not white[0].any()
    dense, *_ = item_text_table(["a", "b"], {"a": "red kettle", "b": "blue lamp"}, 0)
    np.testing.assert_allclose(white[1:], dense[1:], atol=1e-6)
