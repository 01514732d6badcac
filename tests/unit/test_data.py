"""training.data: the synthetic generator, the data-directory format, the ML-100K converter
and the wheel checksum (all offline)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from training.data import ml100k
from training.data.schema import DataFormatError, load_dataset, write_dataset
from training.data.synthetic import GENRES, generate

# --- synthetic ---------------------------------------------------------------------------


def test_generate_is_deterministic_for_a_seed() -> None:
    a = generate(n_users=30, n_items=40, interactions_per_user=5, seed=7)
    b = generate(n_users=30, n_items=40, interactions_per_user=5, seed=7)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    c = generate(n_users=30, n_items=40, interactions_per_user=5, seed=8)
    assert not a.interactions.equals(c.interactions)


def test_generate_shape_and_columns() -> None:
    data = generate(n_users=25, n_items=30, interactions_per_user=6, seed=1)
    inter = data.interactions
    assert len(inter) == 25 * 6
    assert {"user_id", "item_id", "timestamp", "rating"} <= set(inter.columns)
    assert inter["timestamp"].dtype == np.int64
    assert inter["rating"].between(1, 5).all()
    assert inter["user_id"].str.fullmatch(r"u\d+").all()
    assert inter["item_id"].str.fullmatch(r"i\d+").all()
    assert inter.groupby("user_id").size().eq(6).all()
    # Items are sampled without replacement per user; timestamps increase per user.
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert inter.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert len(data.items) == 30 and len(data.users) == 25
    assert all(set(g) <= set(GENRES) and 1 <= len(g) <= 2 for g in data.items["genres"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_users": 0},
        {"n_items": 1},
        {"n_items": 5, "interactions_per_user": 6},
        {"interactions_per_user": 0},
    ],
)
def test_generate_rejects_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate(**kwargs)


# --- the data-directory format -----------------------------------------------------------


def test_load_dataset_csv_ids_become_strings(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp,rating\n1,10,1700000000,5\n2,007,1700000001.9,3\n"
    )
    ds = load_dataset(tmp_path)
    inter = ds.interactions
    assert inter["user_id"].tolist() == ["1", "2"]
    assert inter["item_id"].tolist() == ["10", "007"]  # leading zeros kept: ids are not numbers
    assert inter["timestamp"].tolist() == [1_700_000_000, 1_700_000_001]
    assert inter["timestamp"].dtype == np.int64
    assert ds.items is None and ds.users is None
    assert ds.source == str(tmp_path)


def test_load_dataset_parquet_ids_become_strings(tmp_path: Path) -> None:
    pd.DataFrame(
        {"user_id": [1, 2, 3], "item_id": [10, 20, 10], "timestamp": [3.0, 2.0, 1.0]}
    ).to_parquet(tmp_path / "interactions.parquet")
    pd.DataFrame(
        {"item_id": [10, 20], "title": ["Ten", "Twenty"], "genres": [["a", "b"], []]}
    ).to_parquet(tmp_path / "items.parquet")
    pd.DataFrame({"user_id": [1, 2, 3], "age": [20, 30, 40]}).to_parquet(tmp_path / "users.parquet")
    ds = load_dataset(tmp_path)
    assert ds.interactions["user_id"].tolist() == ["1", "2", "3"]
    assert ds.interactions["item_id"].tolist() == ["10", "20", "10"]
    assert ds.interactions["timestamp"].tolist() == [3, 2, 1]
    assert ds.items is not None and ds.items["item_id"].tolist() == ["10", "20"]
    assert [list(g) for g in ds.items["genres"]] == [["a", "b"], []]
    assert ds.users is not None and ds.users["user_id"].tolist() == ["1", "2", "3"]
    assert ds.item_titles() == {"10": "Ten", "20": "Twenty"}


def test_parquet_is_preferred_over_csv(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\ncsv,x,1\n")
    pd.DataFrame({"user_id": ["pq"], "item_id": ["x"], "timestamp": [1]}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    assert load_dataset(tmp_path).interactions["user_id"].tolist() == ["pq"]


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
def test_missing_required_column_is_named(tmp_path: Path, column: str) -> None:
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1]})
    frame.drop(columns=[column]).to_csv(tmp_path / "interactions.csv", index=False)
    with pytest.raises(DataFormatError, match=rf"missing required column\(s\) \['{column}'\]"):
        load_dataset(tmp_path)


def test_items_table_without_item_id_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu,i,1\n")
    (tmp_path / "items.csv").write_text("id,title\ni,Title\n")
    with pytest.raises(DataFormatError, match="item_id"):
        load_dataset(tmp_path)


def test_non_numeric_timestamp_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i2,2023-01-01\n"
    )
    with pytest.raises(DataFormatError, match=r"timestamp '2023-01-01' is not a number"):
        load_dataset(tmp_path)


def test_empty_timestamp_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,i1,\n")
    with pytest.raises(DataFormatError, match="timestamp"):
        load_dataset(tmp_path)


def test_missing_parquet_id_is_rejected(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": ["u", None], "item_id": ["i", "j"], "timestamp": [1, 2]}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    with pytest.raises(DataFormatError, match="'user_id' has empty values"):
        load_dataset(tmp_path)


def test_empty_csv_id_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n,i1,5\nu2,i2,6\n")
    with pytest.raises(DataFormatError, match=r"column .user_id. is empty in data row 1"):
        load_dataset(tmp_path)


def test_no_interactions_rows_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n")
    with pytest.raises(DataFormatError, match="no interactions"):
        load_dataset(tmp_path)


def test_missing_interactions_table_or_dir_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="interactions"):
        load_dataset(tmp_path)
    with pytest.raises(DataFormatError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "interactions.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataFormatError, match=r"interactions\.parquet"):
        load_dataset(tmp_path)


def test_csv_genres_are_split_into_lists(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu,i1,1\n")
    (tmp_path / "items.csv").write_text(
        "item_id,title,genres\ni1,One,a|b\ni2,Two,\ni3,Three,Sci-Fi\ni4,Four,a||c|\n"
    )
    items = load_dataset(tmp_path).items
    assert items is not None
    assert items["genres"].tolist() == [["a", "b"], [], ["Sci-Fi"], ["a", "c"]]


def test_write_dataset_round_trips_through_load_dataset(tmp_path: Path) -> None:
    data = generate(n_users=10, n_items=12, interactions_per_user=3, seed=2)
    write_dataset(tmp_path / "d", data.interactions, data.items, data.users)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
    ]
    ds = load_dataset(tmp_path / "d")
    pd.testing.assert_frame_equal(ds.interactions, data.interactions)
    assert ds.items is not None
    assert [list(g) for g in ds.items["genres"]] == data.items["genres"].tolist()


# --- ML-100K conversion (RecBole atomic files) -------------------------------------------

INTER = (
    b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    b"196\t242\t3\t881250949\n"
    b"186\t302\t3.0\t891717742.0\n"
    b"22\t377\t1\t878887116\n"
)
ITEM = (
    b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    b"242\tKolya\t1996\tComedy\n"
    b"302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
    b'377\tHeavyweights "NA" (1994)\t\tChildren Comedy\n'
)
USER = (
    b"user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    b"196\t49\tM\twriter\t55105\n"
    b"186\t39\tF\texecutive\t00000\n"
    b"22\t25\tM\twriter\tT8H1N\n"
)


def test_convert_atomic_files() -> None:
    interactions, items, users = ml100k.convert(INTER, ITEM, USER)

    assert list(interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert interactions["user_id"].tolist() == ["196", "186", "22"]
    assert interactions["item_id"].tolist() == ["242", "302", "377"]
    assert interactions["rating"].tolist() == [3, 3, 1]
    assert interactions["rating"].dtype == np.int8
    assert interactions["timestamp"].tolist() == [881250949, 891717742, 878887116]
    assert interactions["timestamp"].dtype == np.int64

    assert list(items.columns) == ["item_id", "title", "year", "genres"]
    assert items["title"].tolist() == ["Kolya", "L.A. Confidential", 'Heavyweights "NA" (1994)']
    assert str(items["year"].dtype) == "Int64"
    assert items["year"].tolist()[:2] == [1996, 1997]
    assert items["year"].isna().tolist() == [False, False, True]
    assert items["genres"].tolist() == [
        ["Comedy"],
        ["Crime", "Film-Noir", "Mystery", "Thriller"],
        ["Children", "Comedy"],
    ]

    assert list(users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert users["age"].tolist() == [49, 39, 25]
    assert users["age"].dtype.kind == "i"
    assert users["zip_code"].tolist() == ["55105", "00000", "T8H1N"]  # strings, zeros kept
    assert users["gender"].tolist() == ["M", "F", "M"]


def test_converted_tables_load_as_a_dataset(tmp_path: Path) -> None:
    write_dataset(tmp_path, *ml100k.convert(INTER, ITEM, USER))
    ds = load_dataset(tmp_path)
    assert ds.interactions["user_id"].tolist() == ["196", "186", "22"]
    assert ds.item_titles()["302"] == "L.A. Confidential"


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Fail any attempt to run pip; record what would have run."""
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> SimpleNamespace:
        calls.append(cmd)
        return SimpleNamespace(returncode=1, stderr="network disabled in unit tests", stdout="")

    monkeypatch.setattr(ml100k.subprocess, "run", fake_run)
    return calls


def test_download_wheel_deletes_a_wheel_with_the_wrong_sha256(
    tmp_path: Path, no_pip: list[list[str]]
) -> None:
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    assert wheel.name == ml100k.RECBOLE_WHEEL
    wheel.write_bytes(b"definitely not the recbole wheel")
    with pytest.raises(ml100k.FetchError, match="sha256"):
        ml100k.download_wheel(tmp_path)
    assert not wheel.exists()
    assert no_pip == []  # the cached file was checked, not re-downloaded


def test_download_wheel_reports_pip_failure(tmp_path: Path, no_pip: list[list[str]]) -> None:
    with pytest.raises(ml100k.FetchError, match="network disabled"):
        ml100k.download_wheel(tmp_path / "cache")
    assert len(no_pip) == 1
    assert "--no-deps" in no_pip[0] and "recbole==1.2.1" in no_pip[0]
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary download dir is gone


def _fake_wheel(path: Path, members: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_fetch_ml100k_from_a_checked_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pip: list[list[str]]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    prefix = "recbole/dataset_example/ml-100k/ml-100k"
    sha = _fake_wheel(
        cache / ml100k.RECBOLE_WHEEL,
        {
            f"{prefix}.inter": INTER,
            f"{prefix}.item": ITEM,
            f"{prefix}.user": USER,
            "recbole/other.py": b"print('never read')",
        },
    )
    monkeypatch.setattr(ml100k, "RECBOLE_WHEEL_SHA256", sha)
    monkeypatch.setattr(ml100k, "EXPECTED_COUNTS", {"interactions": 3, "items": 3, "users": 3})

    out = ml100k.fetch_ml100k(tmp_path / "data", cache)

    assert no_pip == []
    ds = load_dataset(out)
    assert len(ds.interactions) == 3
    assert (out / ".fetched").read_text().strip() == sha
    # Second call is a no-op even if the wheel is gone.
    (cache / ml100k.RECBOLE_WHEEL).unlink()
    assert ml100k.fetch_ml100k(tmp_path / "data", cache) == out


def test_fetch_ml100k_rejects_unexpected_sizes_and_missing_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pip: list[list[str]]
) -> None:
    prefix = "recbole/dataset_example/ml-100k/ml-100k"
    cache = tmp_path / "cache"
    cache.mkdir()
    sha = _fake_wheel(
        cache / ml100k.RECBOLE_WHEEL,
        {f"{prefix}.inter": INTER, f"{prefix}.item": ITEM, f"{prefix}.user": USER},
    )
    monkeypatch.setattr(ml100k, "RECBOLE_WHEEL_SHA256", sha)
    with pytest.raises(ml100k.FetchError, match="unexpected ml-100k sizes"):
        ml100k.fetch_ml100k(tmp_path / "data", cache)
    assert not (tmp_path / "data" / ".fetched").exists()

    sha = _fake_wheel(cache / ml100k.RECBOLE_WHEEL, {f"{prefix}.inter": INTER})
    monkeypatch.setattr(ml100k, "RECBOLE_WHEEL_SHA256", sha)
    with pytest.raises(ml100k.FetchError, match="lacks the ml-100k files"):
        ml100k.fetch_ml100k(tmp_path / "data", cache)
