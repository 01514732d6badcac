"""`recall items add`'s input parsing (recall_cli/catalogue_commands.py): CSV, JSONL and
--feature options into (item_id, features as text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recall_cli.catalogue_commands import parse_features, read_items_file


def test_csv_rows_keep_every_non_empty_column_as_text(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id,genres,year\nn1,Drama|War,1990\nn2,Comedy,\n")
    assert read_items_file(path) == [
        ("n1", {"genres": "Drama|War", "year": "1990"}),
        ("n2", {"genres": "Comedy"}),
    ]
    (tmp_path / "bad.csv").write_text("id,genres\n1,x\n")
    with pytest.raises(ValueError, match="item_id column"):
        read_items_file(tmp_path / "bad.csv")


def test_jsonl_flat_or_nested_lists_joined(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"item_id": 7, "genres": ["Drama", "War"], "year": 1990}\n\n'
        '{"item_id": "n2", "features": {"genres": "Comedy"}}\n'
    )
    assert read_items_file(path) == [
        ("7", {"genres": "Drama|War", "year": "1990"}),
        ("n2", {"genres": "Comedy"}),
    ]
    path.write_text('{"item_id": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"items.jsonl:2: not JSON"):
        read_items_file(path)


def test_feature_options() -> None:
    assert parse_features(["genres=Drama|War", "title=a=b"]) == {
        "genres": "Drama|War",
        "title": "a=b",
    }
    with pytest.raises(ValueError, match="expected column=value"):
        parse_features(["genres"])
