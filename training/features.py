"""The feature spec: which item and user columns the towers read, and how each is encoded.

A spec names columns and their types, so another catalogue works without code changes::

    features:
      item:
        - {column: genres, kind: multi_categorical}
        - {column: year, kind: bucketized, buckets: 10}
      user:
        - {column: gender, kind: categorical}
        - {column: age, kind: bucketized, boundaries: [18, 25, 35, 45, 50, 56]}

Every feature is encoded to vocabulary indices, 0 meaning "missing or unknown", so each
feature is one embedding table:

- ``categorical``: one value per row; values seen fewer than ``min_count`` times share 0.
- ``multi_categorical``: a list of values per row (Parquet list or ``|``-separated text),
  mean-pooled; at most ``max_values`` per row.
- ``bucketized``: a number, bucketed by ``boundaries`` or by ``buckets`` quantiles of the
  training data (the boundaries are stored in the model either way).
- ``text_tokens``: lower-cased word tokens of a text column, mean-pooled (``max_values``).
- ``lsh_buckets``: a content vector hashed by random hyperplanes (SimHash) into ``tables``
  bucket ids of ``bits`` bits each; every table has its own rows in the embedding, and the
  item's embedding is the mean over its tables. The content vector is the L2-normalised
  bag of tokens of ``source_columns`` (text words, list values, numeric values bucketed by
  ``numeric_step``), or of ``column`` itself. Items close in content share buckets, hence
  parameters: what an item with no interactions (no trained id embedding) needs. The
  hyperplanes come from ``seed`` and the fitted token vocabulary, both stored in the model,
  so the hashing is deterministic.

A column absent from the data turns its feature off when ``optional`` (the default), and is
an error otherwise; the resolved spec (what was really used) is stored in the manifest.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureKind = Literal[
    "categorical", "multi_categorical", "bucketized", "text_tokens", "lsh_buckets"
]
MISSING = 0
"""Index of a missing, unknown or padding value in every feature vocabulary."""
_TOKEN = re.compile(r"[a-z0-9]+")


class FeatureColumn(BaseModel):
    """One column of the items or users table, as one tower input."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(description="Column name in the items/users table.")
    kind: FeatureKind = Field(description="How the column is encoded (see module docstring).")
    optional: bool = Field(
        default=True, description="Turn the feature off if the column is absent."
    )
    min_count: int = Field(default=1, ge=1, description="Rarer values map to the unknown index 0.")
    max_values: int = Field(
        default=8, ge=1, le=256, description="Values (or tokens) kept per row, multi-valued kinds."
    )
    buckets: int = Field(default=10, ge=2, le=1000, description="Quantile buckets (bucketized).")
    boundaries: list[float] | None = Field(
        default=None, description="Explicit bucket boundaries (bucketized); overrides ``buckets``."
    )
    source_columns: list[str] | None = Field(
        default=None,
        description="lsh_buckets: columns the content vector is built from (default: column).",
    )
    tables: int = Field(default=8, ge=1, le=64, description="lsh_buckets: hash tables.")
    bits: int = Field(default=6, ge=1, le=16, description="lsh_buckets: hyperplanes per table.")
    seed: int = Field(default=0, description="lsh_buckets: seed of the random hyperplanes.")
    numeric_step: float = Field(
        default=10.0, gt=0, description="lsh_buckets: numeric source values → value // step."
    )

    @model_validator(mode="after")
    def _sorted_boundaries(self) -> FeatureColumn:
        if self.boundaries is not None and self.boundaries != sorted(set(self.boundaries)):
            raise ValueError(f"{self.column}: boundaries must be strictly increasing")
        return self


class FeatureSpec(BaseModel):
    """Item-tower and user-tower columns. Defaults fit ML-100K and skip what is absent."""

    model_config = ConfigDict(extra="forbid")

    item: list[FeatureColumn] = Field(
        default_factory=lambda: [
            FeatureColumn(column="genres", kind="multi_categorical"),
            FeatureColumn(column="year", kind="bucketized", buckets=10),
        ]
    )
    user: list[FeatureColumn] = Field(
        default_factory=lambda: [
            FeatureColumn(column="age", kind="bucketized", buckets=8),
            FeatureColumn(column="gender", kind="categorical"),
            FeatureColumn(column="occupation", kind="categorical"),
        ]
    )


class FeatureSpecError(ValueError):
    """A required feature column is missing, or a column cannot be encoded as declared."""


@dataclass(frozen=True)
class FittedFeature:
    """A feature with its vocabulary (categorical/tokens) or boundaries (bucketized).

    ``size`` is the embedding table's row count, index 0 (missing) included.
    """

    spec: FeatureColumn
    vocabulary: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.column

    @property
    def multi_valued(self) -> bool:
        return self.spec.kind in ("multi_categorical", "text_tokens", "lsh_buckets")

    @property
    def width(self) -> int:
        """Values per row in the encoded matrix."""
        if self.spec.kind == "lsh_buckets":
            return self.spec.tables
        return self.spec.max_values if self.multi_valued else 1

    @property
    def size(self) -> int:
        if self.spec.kind == "bucketized":
            return len(self.boundaries) + 2  # missing + (len+1) buckets
        if self.spec.kind == "lsh_buckets":
            return 1 + self.spec.tables * 2**self.spec.bits  # missing + every table's buckets
        return len(self.vocabulary) + 1

    @property
    def source_columns(self) -> list[str]:
        """Table columns this feature reads (several only for lsh_buckets)."""
        return list(self.spec.source_columns or [self.spec.column])

    def describe(self) -> dict[str, object]:
        """What the manifest records of this feature."""
        out: dict[str, object] = {"column": self.name, "kind": self.spec.kind, "size": self.size}
        if self.boundaries:
            out["boundaries"] = list(self.boundaries)
        if self.spec.kind == "lsh_buckets":
            out.update(
                source_columns=self.source_columns,
                tables=self.spec.tables,
                bits=self.spec.bits,
                seed=self.spec.seed,
                numeric_step=self.spec.numeric_step,
                tokens=list(self.vocabulary),
            )
        return out

    def hyperplanes(self) -> np.ndarray:
        """lsh_buckets: [tables·bits, n_tokens] float64 Gaussian hyperplanes from ``seed``."""
        rng = np.random.default_rng(self.spec.seed)
        return rng.standard_normal((self.spec.tables * self.spec.bits, len(self.vocabulary)))

    def encode_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """lsh_buckets: [n] rows of the source columns → [n, tables] int32 bucket indices.

        Table t's bucket b (the sign bits of the row's projections, as an integer) is index
        ``1 + t·2^bits + b``; a row with no known token is all missing (0).
        """
        index = {v: i for i, v in enumerate(self.vocabulary)}
        content = np.zeros((len(frame), len(self.vocabulary)), dtype=np.float64)
        for r, tokens in enumerate(_content_tokens(frame, self.spec.numeric_step)):
            for token in tokens:
                if token in index:
                    content[r, index[token]] = 1.0
        norms = np.linalg.norm(content, axis=1, keepdims=True)
        content /= np.maximum(norms, 1e-12)
        bits = (content @ self.hyperplanes().T > 0).reshape(len(frame), self.spec.tables, -1)
        buckets = bits.astype(np.int64) @ (1 << np.arange(self.spec.bits, dtype=np.int64))
        out = 1 + np.arange(self.spec.tables) * 2**self.spec.bits + buckets
        out[norms[:, 0] == 0] = MISSING
        return out.astype(np.int32)

    def encode(self, values: pd.Series) -> np.ndarray:
        """[n] column values → [n, width] int32 indices (0 = missing/unknown/padding)."""
        if self.spec.kind == "lsh_buckets":
            return self.encode_rows(values.to_frame())
        if self.spec.kind == "bucketized":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            out = np.searchsorted(np.asarray(self.boundaries), numbers, side="right") + 1
            out[np.isnan(numbers)] = MISSING
            return out.astype(np.int32)[:, None]
        index = {v: i + 1 for i, v in enumerate(self.vocabulary)}
        rows = [_values(v, self.spec.kind) for v in values]
        out = np.zeros((len(rows), self.width), dtype=np.int32)
        for r, row in enumerate(rows):
            codes = [index.get(v, MISSING) for v in row][: self.width]
            out[r, : len(codes)] = codes
        return out


def _values(value: object, kind: FeatureKind) -> list[str]:
    """The string values of one cell: a list for multi-valued kinds, one for categorical."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if kind == "text_tokens":
        return _TOKEN.findall(str(value).lower())
    if kind == "multi_categorical":
        if isinstance(value, str):
            return [v for v in value.split("|") if v]
        if isinstance(value, Iterable):
            return [str(v) for v in value]
        return [str(value)]
    text = str(value)
    return [text] if text and text != "<NA>" else []


def _content_tokens(frame: pd.DataFrame, numeric_step: float) -> list[list[str]]:
    """Per row, the ``column=value`` tokens of every column: words of text, list values,
    numbers as ``value // numeric_step`` (so a year becomes its decade with step 10)."""
    out: list[list[str]] = [[] for _ in range(len(frame))]
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            for r, x in enumerate(numbers):
                if not np.isnan(x):
                    out[r].append(f"{name}={int(x // numeric_step)}")
            continue
        for r, value in enumerate(column):
            kind: FeatureKind = "text_tokens" if isinstance(value, str) else "multi_categorical"
            if isinstance(value, str) and "|" in value:
                kind = "multi_categorical"
            out[r].extend(f"{name}={v}" for v in _values(value, kind))
    return out


def fit_feature(spec: FeatureColumn, values: pd.Series | pd.DataFrame) -> FittedFeature:
    """Learn a feature's vocabulary or bucket boundaries from training-time values
    (a DataFrame of the source columns for lsh_buckets, else one column)."""
    if spec.kind == "lsh_buckets":
        frame = values if isinstance(values, pd.DataFrame) else values.to_frame()
        tokens: Counter[str] = Counter()
        for row in _content_tokens(frame, spec.numeric_step):
            tokens.update(set(row))
        kept = sorted(t for t, c in tokens.items() if c >= spec.min_count)
        if not kept:
            raise FeatureSpecError(f"{spec.column}: no content tokens to hash")
        return FittedFeature(spec, vocabulary=tuple(kept))
    if isinstance(values, pd.DataFrame):
        raise FeatureSpecError(f"{spec.column}: only lsh_buckets reads several columns")
    if spec.kind == "bucketized":
        if spec.boundaries is not None:
            return FittedFeature(spec, boundaries=tuple(spec.boundaries))
        numbers = pd.to_numeric(values, errors="coerce").dropna()
        if numbers.empty:
            raise FeatureSpecError(f"{spec.column}: no numeric values to bucketize")
        qs = np.quantile(numbers, np.linspace(0, 1, spec.buckets + 1)[1:-1])
        return FittedFeature(spec, boundaries=tuple(float(q) for q in np.unique(qs)))
    counts: Counter[str] = Counter()
    for value in values:
        counts.update(_values(value, spec.kind))
    vocabulary = sorted(v for v, c in counts.items() if c >= spec.min_count)
    return FittedFeature(spec, vocabulary=tuple(vocabulary))


def fit_features(
    specs: Sequence[FeatureColumn], table: pd.DataFrame | None, table_name: str
) -> list[FittedFeature]:
    """Fit every feature whose column exists; skip absent optional ones.

    Raises:
        FeatureSpecError: a non-optional column is absent.
    """
    fitted = []
    for spec in specs:
        if spec.kind == "lsh_buckets" and spec.source_columns:
            present = [c for c in spec.source_columns if table is not None and c in table.columns]
            if table is None or not present:
                if not spec.optional:
                    raise FeatureSpecError(
                        f"feature {spec.column!r} needs one of {spec.source_columns} but the "
                        f"{table_name} table has {[] if table is None else list(table.columns)}"
                    )
                continue
            resolved = spec.model_copy(update={"source_columns": present})
            fitted.append(fit_feature(resolved, table[present]))
            continue
        if table is None or spec.column not in table.columns:
            if not spec.optional:
                raise FeatureSpecError(
                    f"feature column {spec.column!r} is required but the {table_name} table "
                    f"has {[] if table is None else list(table.columns)}"
                )
            continue
        fitted.append(fit_feature(spec, table[spec.column]))
    return fitted


def encode_table(
    features: Sequence[FittedFeature],
    table: pd.DataFrame | None,
    id_column: str,
    ids: Sequence[str],
) -> dict[str, np.ndarray]:
    """Feature matrices for ``ids`` in order: name → [len(ids), width] int32.

    Ids absent from ``table`` (or a missing table) get all-zero rows (missing).
    """
    out = {}
    for feature in features:
        if table is None:
            out[feature.name] = np.zeros((len(ids), feature.width), dtype=np.int32)
            continue
        rows = table.drop_duplicates(id_column).set_index(id_column)[feature.source_columns]
        values = rows.reindex(pd.Index(ids, dtype=object))
        if feature.spec.kind == "lsh_buckets":
            out[feature.name] = feature.encode_rows(values)
        else:
            out[feature.name] = feature.encode(values[feature.name])
    return out
