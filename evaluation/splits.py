"""Evaluation protocols: which interactions train, which are held out, which are masked.

- **P1** reproduces RecBole 1.2.1's default protocol (``eval_args``: ``split: {RS: [0.8, 0.1,
  0.1]}``, ``order: RO``, ``group_by: user``, ``mode: full``): every user's interactions
  are shuffled and cut 80/10/10 with RecBole's rounding (:func:`recbole_split_counts`). At
  test time the user's train *and* validation items are masked (RecBole's test sampler's
  ``used_ids`` accumulate the train, valid and test phases; its "history" is used − test).
- **P2** is temporal leave-last-one-out: each user's last interaction by timestamp (stable
  order on ties) is the test item, the rest trains, training items are masked. Users with a
  single interaction only train; test items never seen in training are dropped (no method
  can learn them), as in ``training``'s own leave-last-out split.

- **P2-cold** is P2 where a seeded quarter of the test users keep only their
  ``COLD_KEEP`` most recent training interactions (the rest are dropped from the data, as
  if the user had just arrived): ML-100K has no user with ≤ 5 interactions, so this is how
  the cold-user slice gets users. Everyone else's data is unchanged.

- **P3** (cold items, issue 12): a seeded ``COLD_ITEM_SHARE`` of the items is held out of
  training entirely; every user with interactions on them (and at least one training
  interaction) is tested on those, ranking the cold items only (every warm item is
  masked), so a method must place items it never saw interactions of.

Each :class:`Split` carries a ``tuning`` split for hyper-parameters (EASE's λ): P1's is
train → validation, P2's is everything before the second-to-last interaction → that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.evaluation import leave_last_out

PROTOCOLS = ("p1", "p2", "p2cold", "p3")
COLD_ITEM_SHARE = 0.1
"""P3: share of the items (seeded) held out of training."""
COLD_SHARE = 0.25
"""P2-cold: share of test users (seeded) cut down to their most recent training items."""
COLD_KEEP = 5
"""P2-cold: training interactions a cut-down user keeps (at or under the cold slice's cap)."""
P1_RATIOS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Split:
    """One train/test split of interaction rows (``user_id``, ``item_id``, ``timestamp``, …).

    ``masked`` holds the (user, item) rows whose items must not be recommended at test time;
    it always contains ``train``. ``tuning`` is a smaller split of the same protocol for
    choosing hyper-parameters without touching ``test`` (None for a tuning split itself).
    """

    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame
    masked: pd.DataFrame
    tuning: Split | None = None

    @property
    def test_users(self) -> list[str]:
        """Users with at least one test interaction, sorted."""
        return sorted(self.test["user_id"].unique().tolist())


def recbole_split_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """How many of a user's ``total`` interactions go to each part, RecBole's way.

    Mirrors ``Dataset._calcu_split_ids`` (recbole 1.2.1): every part but the first is
    ``int(ratio · total)`` (rounded down), the first takes the rest; then, while the first
    part keeps more than one, each later part whose exact share is in (0, 1) gets one
    interaction from it. Ratios are normalised first, with the same float arithmetic.
    """
    tot_ratio = sum(ratios)
    norm = [r / tot_ratio for r in ratios]
    counts = [int(r * total) for r in norm]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(norm)):
        if counts[0] <= 1:
            break
        if 0 < norm[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def random_ratio_split(
    interactions: pd.DataFrame, seed: int, ratios: Sequence[float] = P1_RATIOS
) -> Split:
    """P1: per-user random 80/10/10 split (train, validation, test), RecBole's rules.

    The whole table is permuted once with ``seed`` (RecBole's ``order: RO``), then each
    user's rows, in that order, are cut by :func:`recbole_split_counts`.
    """
    if len(ratios) != 3:
        raise ValueError("P1 needs three ratios: train, validation, test")
    rng = np.random.default_rng(seed)
    shuffled = interactions.iloc[rng.permutation(len(interactions))].reset_index(drop=True)
    position = shuffled.groupby("user_id", sort=False).cumcount().to_numpy()
    sizes = shuffled.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    part = np.zeros(len(shuffled), dtype=np.int8)
    for total in np.unique(sizes):
        n_train, n_valid, _ = recbole_split_counts(int(total), ratios)
        rows = sizes == total
        part[rows & (position >= n_train)] = 1
        part[rows & (position >= n_train + n_valid)] = 2
    train, valid, test = (shuffled[part == p].reset_index(drop=True) for p in range(3))
    masked = pd.concat([train, valid], ignore_index=True)
    tuning = Split("p1", train=train, test=valid, masked=train)
    return Split("p1", train=train, test=test, masked=masked, tuning=tuning)


def _hold_out_last(ordered: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) with each user's last row as test (users with ≥ 2): the trainer's own
    leave-last-out rule, so the model is validated the way it is evaluated."""
    split = leave_last_out(ordered)
    return split.train, split.test


def temporal_leave_last_out(interactions: pd.DataFrame) -> Split:
    """P2: each user's last interaction by timestamp is held out; the rest trains."""
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    train, test = _hold_out_last(ordered)
    tune_train, tune_test = _hold_out_last(train)
    tuning = Split("p2", train=tune_train, test=tune_test, masked=tune_train)
    return Split("p2", train=train, test=test, masked=train, tuning=tuning)


def cut_down_users(
    split: Split, seed: int, share: float = COLD_SHARE, keep: int = COLD_KEEP
) -> Split:
    """``split`` with a seeded ``share`` of its test users reduced to their ``keep`` most
    recent training interactions (dropped from ``train`` and ``masked`` alike)."""
    rng = np.random.default_rng(seed)
    users = np.array(sorted(split.test["user_id"].unique()), dtype=object)
    chosen = set(rng.choice(users, size=round(share * len(users)), replace=False).tolist())
    ordered = split.train.sort_values(["user_id", "timestamp"], kind="stable")
    from_end = ordered.groupby("user_id").cumcount(ascending=False).to_numpy()
    dropped = ordered["user_id"].isin(chosen).to_numpy() & (from_end >= keep)
    train = ordered[~dropped].reset_index(drop=True)
    test = split.test[split.test["item_id"].isin(set(train["item_id"]))].reset_index(drop=True)
    tune_train, tune_test = _hold_out_last(train)
    tuning = Split("p2cold", train=tune_train, test=tune_test, masked=tune_train)
    return Split("p2cold", train=train, test=test, masked=train, tuning=tuning)


def cold_item_split(interactions: pd.DataFrame, seed: int, share: float = COLD_ITEM_SHARE) -> Split:
    """P3: ``share`` of the items (seeded choice) leave training; their interactions are the
    test part, and every warm item is masked for every test user."""
    rng = np.random.default_rng(seed)
    items = np.array(sorted(interactions["item_id"].unique()), dtype=object)
    cold = set(rng.choice(items, size=max(1, round(share * len(items))), replace=False).tolist())
    is_cold = interactions["item_id"].isin(cold).to_numpy()
    train = interactions[~is_cold].reset_index(drop=True)
    test = interactions[is_cold & interactions["user_id"].isin(set(train["user_id"])).to_numpy()]
    test = test.reset_index(drop=True)
    users = sorted(test["user_id"].unique())
    warm = sorted(set(train["item_id"]))
    masked = pd.DataFrame(
        {
            "user_id": np.repeat(np.array(users, dtype=object), len(warm)),
            "item_id": np.tile(np.array(warm, dtype=object), len(users)),
        }
    )
    return Split("p3", train=train, test=test, masked=masked, tuning=None)


def make_split(protocol: str, interactions: pd.DataFrame, seed: int) -> Split:
    """The split of ``protocol`` ("p1", "p2", "p2cold" or "p3") over ``interactions``."""
    if protocol == "p1":
        return random_ratio_split(interactions, seed)
    if protocol == "p2":
        return temporal_leave_last_out(interactions)
    if protocol == "p2cold":
        return cut_down_users(temporal_leave_last_out(interactions), seed)
    if protocol == "p3":
        return cold_item_split(interactions, seed)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
