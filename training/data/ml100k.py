"""Fetch MovieLens-100K from the ``recbole`` wheel on PyPI and write it as a data directory.

The wheel is downloaded without its dependencies (``pip download --no-deps``), its SHA-256
is checked against a pinned value before anything is read from it, and only the files
under ``recbole/dataset_example/ml-100k/`` are extracted. Nothing else is fetched.

Result (943 users, 1,682 items, 100,000 ratings)::

    interactions.parquet  user_id, item_id, rating (1..5), timestamp (Unix seconds)
    items.parquet         item_id, title, year (nullable int), genres (list of str)
    users.parquet         user_id, age, gender, occupation, zip_code
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from training.data.schema import write_dataset

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
EXPECTED_COUNTS = {"interactions": 100_000, "items": 1_682, "users": 943}
_DONE_MARKER = ".fetched"


class FetchError(RuntimeError):
    """The wheel could not be downloaded, failed its checksum, or lacks the data."""


def download_wheel(cache_dir: Path) -> Path:
    """The recbole wheel in ``cache_dir``, downloaded with pip if not there; SHA-256 checked."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / RECBOLE_WHEEL
    if not wheel.exists():
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                f"recbole=={RECBOLE_VERSION}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = Path(tmp) / RECBOLE_WHEEL
            if proc.returncode != 0 or not got.exists():
                raise FetchError(
                    f"could not download recbole=={RECBOLE_VERSION} from PyPI "
                    f"(pip exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
                )
            got.replace(wheel)
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != RECBOLE_WHEEL_SHA256:
        wheel.unlink()
        raise FetchError(
            f"{RECBOLE_WHEEL}: sha256 {actual} differs from the pinned "
            f"{RECBOLE_WHEEL_SHA256}; the file was deleted, nothing was extracted"
        )
    return wheel


def _read_atomic(raw: bytes) -> pd.DataFrame:
    """Parse a RecBole atomic file: tab-separated, header cells ``name:type``."""
    frame = pd.read_csv(
        io.BytesIO(raw), sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
    )
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def convert(
    inter: bytes, item: bytes, user: bytes
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """RecBole's ml-100k atomic files → (interactions, items, users) in the data format."""
    i = _read_atomic(inter)
    interactions = pd.DataFrame(
        {
            "user_id": i["user_id"],
            "item_id": i["item_id"],
            "rating": i["rating"].astype(float).astype("int8"),
            "timestamp": i["timestamp"].astype(float).astype("int64"),
        }
    )
    it = _read_atomic(item)
    items = pd.DataFrame(
        {
            "item_id": it["item_id"],
            "title": it["movie_title"],
            "year": pd.to_numeric(it["release_year"], errors="coerce").astype("Int64"),
            "genres": [v.split() for v in it["class"]],
        }
    )
    u = _read_atomic(user)
    users = pd.DataFrame(
        {
            "user_id": u["user_id"],
            "age": u["age"].astype(int),
            "gender": u["gender"],
            "occupation": u["occupation"],
            "zip_code": u["zip_code"],
        }
    )
    return interactions, items, users


def fetch_ml100k(out_dir: Path, cache_dir: Path, *, force: bool = False) -> Path:
    """Write ML-100K into ``out_dir`` in the data format; a no-op if already fetched.

    Raises:
        FetchError: download failure, checksum mismatch, or unexpected wheel contents.
    """
    if (out_dir / _DONE_MARKER).exists() and not force:
        return out_dir
    wheel = download_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as zf:
        try:
            raw = {ext: zf.read(f"{_MEMBER_PREFIX}.{ext}") for ext in ("inter", "item", "user")}
        except KeyError as exc:
            raise FetchError(f"{RECBOLE_WHEEL} lacks the ml-100k files: {exc}") from exc
    interactions, items, users = convert(raw["inter"], raw["item"], raw["user"])
    counts = {"interactions": len(interactions), "items": len(items), "users": len(users)}
    if counts != EXPECTED_COUNTS:
        raise FetchError(f"unexpected ml-100k sizes {counts}, expected {EXPECTED_COUNTS}")
    write_dataset(out_dir, interactions, items, users)
    (out_dir / _DONE_MARKER).write_text(RECBOLE_WHEEL_SHA256 + "\n")
    return out_dir
