"""Settings of near-duplicate detection (validated; unknown keys are an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class DuplicateConfig(BaseModel):
    """How `find_duplicates` compares items: which columns, which method, which thresholds.

    Defaults suit film/product titles: character 3-shingles of the normalised title,
    MinHash with 12 bands × 5 rows (a pair at Jaccard 0.9 becomes a candidate with
    probability 0.99998, at 0.8 with 0.992, at 0.5 with 0.32), confirmed at exact
    Jaccard ≥ 0.9 and equal numbers, and the release year as a blocking attribute
    (remakes share a title but never a year).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="Run detection (training merges the groups found)."
    )
    method: Literal["minhash", "simhash"] = Field(
        default="minhash",
        description="MinHash + LSH banding, or 64-bit SimHash + bit-block buckets.",
    )
    text_columns: list[str] = Field(
        default_factory=lambda: ["title"],
        description="Columns whose normalised text is shingled (joined by a space).",
    )
    block_columns: list[str] = Field(
        default_factory=lambda: ["year"],
        description="Attributes that must be equal for two items to be duplicates.",
    )
    merge_missing_blocks: bool = Field(
        default=False,
        description="Whether items lacking a blocking attribute may still be merged "
        "(off: an item without a year is nobody's duplicate).",
    )
    match_numbers: bool = Field(
        default=True,
        description="Texts must contain the same numbers (sequels, model numbers: "
        "'Item 12' and 'Item 123' are never merged, however similar the rest).",
    )
    shingle_size: int = Field(
        default=3, ge=1, le=7, description="Characters (UTF-8 bytes) per shingle."
    )
    max_text_bytes: int = Field(
        default=96, ge=8, le=1024, description="Normalised text beyond this many bytes is ignored."
    )
    bands: int = Field(default=12, ge=1, le=256, description="LSH bands (MinHash).")
    rows: int = Field(default=5, ge=1, le=64, description="Signature values per band (MinHash).")
    jaccard_threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Least exact shingle Jaccard of a confirmed pair (MinHash).",
    )
    max_hamming: int = Field(
        default=3, ge=0, le=32, description="Most differing SimHash bits of a confirmed pair."
    )
    min_co_interaction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="When set and interactions are given: least Jaccard of the two items' "
        "user sets for a pair to be confirmed (None: text and attributes decide alone).",
    )
    max_bucket_neighbours: int = Field(
        default=32,
        ge=1,
        description="Pairs per item and band inside one bucket (caps huge buckets).",
    )
    seed: int = Field(default=1, description="Seed of the MinHash functions.")

    @model_validator(mode="after")
    def _has_text(self) -> DuplicateConfig:
        if not self.text_columns:
            raise ValueError("text_columns must name at least one column")
        return self

    @property
    def num_perm(self) -> int:
        """MinHash functions: bands × rows."""
        return self.bands * self.rows


def read_duplicate_config(
    path: Path | None, overrides: dict[str, Any] | None = None
) -> DuplicateConfig:
    """A DuplicateConfig from a YAML mapping (optional) with ``overrides`` (None ignored).

    Raises:
        ValueError: not a mapping, or unknown / out-of-range fields (pydantic's error).
    """
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a duplicates config must be a YAML mapping")
        values.update(loaded or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return DuplicateConfig(**values)
