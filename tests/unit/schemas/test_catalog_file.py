"""Catalog files: JSONL and CSV read into validated items; a file with bad rows is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.files import CatalogFileError, read_catalog
from schemas.records import item_text


def test_jsonl_and_csv_give_the_same_items(tmp_path: Path) -> None:
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"item_id": "p1", "title": "trail shoes", "category": "running", '
        '"attrs": {"brand": "x"}}\n'
        "\n"
        '{"item_id": 7, "title": "frying pan", "description": "cast iron"}\n'
    )
    csv_file = tmp_path / "items.csv"
    csv_file.write_text(
        "item_id,title,category,description,brand\n"
        "p1,trail shoes,running,,x\n"
        "7,frying pan,,cast iron,\n"
    )
    from_jsonl, from_csv = read_catalog(jsonl), read_catalog(csv_file)
    assert from_jsonl == from_csv
    assert [i.text() for i in from_jsonl] == ["trail shoes running", "frying pan cast iron"]
    assert from_jsonl[1].item_id == "7" and from_jsonl[0].attrs == {"brand": "x"}


def test_the_trainer_and_the_catalog_build_an_items_text_alike() -> None:
    assert item_text("trail shoes", "running") == "trail shoes running"
    assert item_text("trail shoes", None, "") == "trail shoes"


def test_a_file_with_bad_rows_is_refused_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "title": "ok"}\nnot json\n{"item_id": "b"}\n')
    with pytest.raises(CatalogFileError, match="2 invalid catalog rows") as error:
        read_catalog(path)
    assert "line 2" in str(error.value) and "line 3" in str(error.value)
