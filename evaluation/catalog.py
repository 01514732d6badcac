"""Integer indices for the users and items under evaluation, and dense 0/1 matrices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Catalog:
    """The users and items one evaluation ranks over (row/column order of every matrix).

    Items are all items of the interaction table (RecBole ranks every item of the dataset,
    also those seen only in validation/test, which then score 0 for item-item methods).
    """

    user_ids: list[str]
    item_ids: list[str]
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_index", {u: r for r, u in enumerate(self.user_ids)})
        object.__setattr__(self, "item_index", {i: r for r, i in enumerate(self.item_ids)})

    @classmethod
    def from_interactions(cls, interactions: pd.DataFrame) -> Catalog:
        """Sorted unique ``user_id`` and ``item_id`` values of ``interactions``."""
        return cls(
            user_ids=sorted(interactions["user_id"].astype(str).unique().tolist()),
            item_ids=sorted(interactions["item_id"].astype(str).unique().tolist()),
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_rows(self, user_ids: Iterable[str]) -> np.ndarray:
        """[n] int64 row of each user id (KeyError for an unknown one)."""
        return np.array([self.user_index[u] for u in user_ids], dtype=np.int64)

    def item_rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """[n] int64 column of each item id; -1 for ids outside the catalogue."""
        return np.array([self.item_index.get(i, -1) for i in item_ids], dtype=np.int64)

    def matrix(self, frame: pd.DataFrame, users: Sequence[str] | None = None) -> np.ndarray:
        """[n_users, n_items] float32 0/1 interaction matrix of ``frame``.

        Rows follow ``users`` when given (else every catalogue user); repeated
        (user, item) pairs count once, as in RecBole's ``inter_matrix``.
        """
        row_of = self.user_index if users is None else {u: r for r, u in enumerate(users)}
        out = np.zeros((len(row_of), self.n_items), dtype=np.float32)
        rows = frame["user_id"].map(row_of)
        keep = rows.notna().to_numpy()
        cols = self.item_rows(frame["item_id"].to_numpy()[keep])
        out[rows.to_numpy()[keep].astype(np.int64), cols] = 1.0
        return out
