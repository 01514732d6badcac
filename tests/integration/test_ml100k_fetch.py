"""The real ML-100K fetch: the recbole wheel from PyPI, its pinned SHA-256, the data format."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.ml100k import RECBOLE_WHEEL, fetch_ml100k
from training.data.schema import load_dataset

pytestmark = pytest.mark.integration


def test_fetch_writes_ml100k_in_the_data_format(tmp_path: Path) -> None:
    out, cache = tmp_path / "ml-100k", tmp_path / "cache"
    fetch_ml100k(out, cache)
    data = load_dataset(out)
    assert len(data.interactions) == 100_000
    assert data.interactions["user_id"].nunique() == 943
    assert data.items is not None and len(data.items) == 1682
    assert data.users is not None and len(data.users) == 943
    assert set(data.interactions["rating"].unique()) == {1, 2, 3, 4, 5}
    assert data.interactions["timestamp"].between(874_000_000, 894_000_000).all()
    assert data.item_titles()["1"] == "Toy Story"
    toy_story = data.items.set_index("item_id").loc["1"]
    assert list(toy_story["genres"]) == ["Animation", "Children's", "Comedy"]
    assert int(toy_story["year"]) == 1995
    assert set(data.users.columns) >= {"user_id", "age", "gender", "occupation", "zip_code"}
    assert (cache / RECBOLE_WHEEL).exists()

    # Second call: already fetched, nothing is downloaded or rewritten.
    (cache / RECBOLE_WHEEL).unlink()
    before = (out / "interactions.parquet").stat().st_mtime_ns
    fetch_ml100k(out, cache)
    assert not (cache / RECBOLE_WHEEL).exists()
    assert (out / "interactions.parquet").stat().st_mtime_ns == before
