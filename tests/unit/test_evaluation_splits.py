"""evaluation.splits: RecBole's P1 counts and rounding, P2's last-item rule, no overlaps."""

from __future__ import annotations

import pandas as pd
import pytest

from evaluation.splits import (
    make_split,
    random_ratio_split,
    recbole_split_counts,
    temporal_leave_last_out,
)
from training.data.synthetic import generate


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (20, [16, 2, 2]),  # int(0.1·20) = 2 each, train takes the rest
        (25, [21, 2, 2]),  # 2.5 rounds down: train gets the remainder
        (29, [25, 2, 2]),
        (30, [24, 3, 3]),
        (9, [7, 1, 1]),  # 0.9 < 1: each later part borrows one from train
        (3, [1, 1, 1]),
        (2, [1, 0, 1]),  # train stops lending once it is down to one
        (1, [1, 0, 0]),
        (100, [80, 10, 10]),
    ],
)
def test_recbole_counts(total: int, expected: list[int]) -> None:
    assert recbole_split_counts(total, (0.8, 0.1, 0.1)) == expected
    assert sum(expected) == total


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str, int]]:
    return set(zip(frame["user_id"], frame["item_id"], frame["timestamp"], strict=True))


def test_p1_per_user_counts_and_disjoint_parts() -> None:
    data = generate(40, 120, 23, seed=3).interactions
    split = random_ratio_split(data, seed=7)
    assert split.tuning is not None
    valid = split.tuning.test
    for user, rows in data.groupby("user_id"):
        n_train, n_valid, n_test = recbole_split_counts(len(rows), (0.8, 0.1, 0.1))
        assert (split.train["user_id"] == user).sum() == n_train
        assert (valid["user_id"] == user).sum() == n_valid
        assert (split.test["user_id"] == user).sum() == n_test
    train, val, test = _pairs(split.train), _pairs(valid), _pairs(split.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == _pairs(data)
    # At test time RecBole masks train and validation items; when tuning, train only.
    assert _pairs(split.masked) == train | val
    assert _pairs(split.tuning.masked) == train


def test_p1_is_seeded() -> None:
    data = generate(30, 80, 20, seed=1).interactions
    assert _pairs(random_ratio_split(data, 5).test) == _pairs(random_ratio_split(data, 5).test)
    assert _pairs(random_ratio_split(data, 5).test) != _pairs(random_ratio_split(data, 6).test)


def test_p2_holds_out_each_users_last_interaction_stably() -> None:
    data = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["1", "2", "3", "1", "3", "2"],
            # a's last two tie at t=5: the later row in file order counts as last.
            "timestamp": [1, 5, 5, 9, 2, 1],
        }
    )
    split = temporal_leave_last_out(data)
    assert sorted(zip(split.test["user_id"], split.test["item_id"], strict=True)) == [
        ("a", "3"),
        ("b", "1"),
    ]
    # c has one interaction: it only trains. Training items are what is masked.
    assert set(split.train["user_id"]) == {"a", "b", "c"}
    assert _pairs(split.masked) == _pairs(split.train)
    assert not (_pairs(split.train) & _pairs(split.test))
    assert len(split.train) + len(split.test) == len(data)
    # Tuning: each user's second-to-last interaction, trained on what came before it
    # (b has only one training interaction left, so it only trains there).
    assert split.tuning is not None
    tuning_test = zip(split.tuning.test["user_id"], split.tuning.test["item_id"], strict=True)
    assert sorted(tuning_test) == [("a", "2")]


def test_p2_drops_test_items_never_trained() -> None:
    data = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["1", "9", "1", "2"],
            "timestamp": [1, 2, 1, 2],
        }
    )
    split = temporal_leave_last_out(data)
    assert split.test.empty  # "9" and "2" appear only as test items


def test_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="p9"):
        make_split("p9", generate(5, 10, 3).interactions, 0)


def test_p2cold_cuts_a_quarter_of_test_users_to_their_latest_five() -> None:
    data = generate(n_users=40, n_items=60, interactions_per_user=12, seed=2).interactions
    warm = make_split("p2", data, seed=5)
    cold = make_split("p2cold", data, seed=5)
    assert cold.protocol == "p2cold"
    counts = cold.train.groupby("user_id").size()
    cut = set(counts[counts <= 5].index)
    assert len(cut) == round(0.25 * warm.test["user_id"].nunique())
    for user in cut:
        kept = cold.train[cold.train["user_id"] == user].sort_values("timestamp")
        full = warm.train[warm.train["user_id"] == user].sort_values("timestamp")
        # The user keeps exactly their five most recent training interactions.
        assert kept["item_id"].tolist() == full["item_id"].tolist()[-5:]
    # Everyone else is untouched, and the test items are the same rows as P2's.
    others = cold.train[~cold.train["user_id"].isin(cut)]
    assert len(others) == len(warm.train[~warm.train["user_id"].isin(cut)])
    assert set(cold.test["user_id"]) <= set(warm.test["user_id"])
    assert make_split("p2cold", data, seed=5).train.equals(cold.train)  # seeded


def test_p3_holds_a_tenth_of_the_items_out_and_masks_every_warm_item() -> None:
    data = generate(50, 200, 25, seed=4).interactions
    split = make_split("p3", data, seed=7)
    items = set(data["item_id"])
    cold = items - set(split.train["item_id"])
    assert len(cold) == round(0.1 * len(items))
    # Cold items never train; every interaction on them by a training user is a test row.
    assert set(split.test["item_id"]) <= cold
    on_cold = data[data["item_id"].isin(cold) & data["user_id"].isin(set(split.train["user_id"]))]
    assert len(split.test) == len(on_cold)
    # Each test user may be recommended the cold items only.
    masked = split.masked.groupby("user_id")["item_id"].apply(set)
    assert set(masked.index) == set(split.test["user_id"])
    assert all(m == items - cold for m in masked)
    assert set(make_split("p3", data, seed=7).test["item_id"]) == set(split.test["item_id"])
    assert set(make_split("p3", data, seed=8).test["item_id"]) != set(split.test["item_id"])


def test_evaluation_folds_duplicate_items_before_splitting() -> None:
    from evaluation.harness import canonical_dataset
    from training.data.schema import Dataset

    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3"],
            "title": ["Chasing Amy", "Chasing Amy", "Cape Fear"],
            "year": [1997, 1997, 1991],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u", "u", "v", "v", "w"],
            "item_id": ["1", "2", "2", "3", "1"],
            "timestamp": [5, 1, 2, 3, 4],
        }
    )
    merged = canonical_dataset(Dataset(interactions, items, None, "t")).interactions
    # "1" has two interactions and "2" two as well: the tie goes to the smaller id.
    assert set(merged["item_id"]) == {"1", "3"}
    # u saw both copies: one interaction remains, the earliest.
    assert merged[merged["user_id"] == "u"]["timestamp"].tolist() == [1]
    assert len(merged) == 4
