"""The data-directory format (DESIGN.md "Input data"): reading, validating, writing.

A data directory holds up to three tables, each as ``<name>.parquet`` or ``<name>.csv``:

- ``interactions`` (required): ``user_id``, ``item_id``, ``timestamp`` (seconds since the
  Unix epoch, integer or float); optional ``rating`` or ``weight``.
- ``items`` (optional): ``item_id`` plus feature columns such as ``title``, ``genres``
  (multi-valued: a list in Parquet, ``|``-separated in CSV), ``year``.
- ``users`` (optional): ``user_id`` plus categorical columns.

Ids are strings everywhere after loading, whatever type the file stored them as.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TABLES = ("interactions", "items", "users")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": ("user_id", "item_id", "timestamp"),
    "items": ("item_id",),
    "users": ("user_id",),
}
MULTI_VALUE_SEPARATOR = "|"


class DataFormatError(ValueError):
    """The data directory does not follow the format above; the message says what to fix."""


@dataclass(frozen=True)
class Dataset:
    """One loaded data directory. ``items``/``users`` are None when the files are absent."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    source: str

    def item_titles(self) -> dict[str, str]:
        """item_id → title, empty when the items table has no ``title`` column."""
        if self.items is None or "title" not in self.items.columns:
            return {}
        return dict(zip(self.items["item_id"], self.items["title"].astype(str), strict=True))


def find_table(data_dir: Path, name: str) -> Path | None:
    """The file holding table ``name`` (Parquet preferred over CSV), or None."""
    for suffix in (".parquet", ".csv"):
        path = data_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"user_id": str, "item_id": str}, keep_default_na=False)
    except Exception as exc:  # pyarrow/pandas raise many types; name the file instead
        raise DataFormatError(f"{path}: cannot be read ({exc})") from exc


def _validate(name: str, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing required column(s) {missing}; found {list(frame.columns)}"
        )
    frame = frame.copy()
    for col in ("user_id", "item_id"):
        if col in frame.columns:
            if frame[col].isna().any():
                raise DataFormatError(f"{path}: column {col!r} has empty values")
            frame[col] = frame[col].astype(str)
            if (frame[col].str.strip() == "").any():
                row = int((frame[col].str.strip() == "").to_numpy().argmax())
                raise DataFormatError(f"{path}: column {col!r} is empty in data row {row + 1}")
    if name == "interactions":
        if frame.empty:
            raise DataFormatError(f"{path}: no interactions")
        ts = pd.to_numeric(frame["timestamp"], errors="coerce")
        if ts.isna().any():
            bad = frame.loc[ts.isna(), "timestamp"].iloc[0]
            raise DataFormatError(f"{path}: timestamp {bad!r} is not a number (Unix seconds)")
        frame["timestamp"] = ts.astype("int64")
    if name == "items" and "genres" in frame.columns and path.suffix == ".csv":
        frame["genres"] = [
            [g for g in str(v).split(MULTI_VALUE_SEPARATOR) if g] for v in frame["genres"]
        ]
    return frame


def load_dataset(data_dir: str | Path) -> Dataset:
    """Read and validate a data directory.

    Raises:
        DataFormatError: when ``interactions`` is missing or any table breaks the format.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataFormatError(f"data directory {data_dir} does not exist")
    frames: dict[str, pd.DataFrame | None] = {}
    for name in TABLES:
        path = find_table(data_dir, name)
        if path is None:
            if name == "interactions":
                raise DataFormatError(
                    f"{data_dir}: no interactions.parquet or interactions.csv "
                    "(columns user_id, item_id, timestamp)"
                )
            frames[name] = None
            continue
        frames[name] = _validate(name, _read(path), path)
    interactions = frames["interactions"]
    assert interactions is not None
    return Dataset(
        interactions=interactions,
        items=frames["items"],
        users=frames["users"],
        source=str(data_dir),
    )


def write_dataset(
    data_dir: Path,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
) -> None:
    """Write tables as Parquet into ``data_dir`` (created if needed), ids as strings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (("interactions", interactions), ("items", items), ("users", users)):
        if frame is None:
            continue
        frame = frame.copy()
        for col in ("user_id", "item_id"):
            if col in frame.columns:
                frame[col] = frame[col].astype(str)
        tmp = data_dir / f".{name}.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(data_dir / f"{name}.parquet")
