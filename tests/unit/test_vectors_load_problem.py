"""``serving.user_vectors.vectors_load_problem``: when recall_index calls a model's user
vectors loaded (its meta key, judged against the model's user count), in step with the
server's vector repair."""

from __future__ import annotations

import json

import pytest

from serving.user_vectors import vectors_load_problem
from serving.vector_repair import VectorHealth, assess


def meta(**fields: object) -> bytes:
    return json.dumps({"dim": 32, "dtype": "float32", "loaded_at": 1.0, **fields}).encode()


def test_a_completed_load_of_every_user_passes() -> None:
    assert vectors_load_problem(meta(count=300), 300) is None


def test_an_absent_meta_key_is_no_load() -> None:
    problem = vectors_load_problem(None, 300)
    assert problem is not None and "meta key is absent" in problem


def test_a_load_of_fewer_users_than_the_model_has_names_both_counts() -> None:
    assert vectors_load_problem(meta(count=120), 300) == (
        "a load of 120 users, but the model has 300"
    )


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", meta(count="300"), meta(count=True), meta(count=12.5)],
)
def test_an_unreadable_meta_value_is_refused(raw: bytes) -> None:
    problem = vectors_load_problem(raw, 300)
    assert problem is not None and problem.startswith("an unreadable meta value"), problem


def test_a_meta_value_without_a_count_passes_on_its_presence() -> None:
    # The key is written after every vector, so its presence alone means a completed load.
    assert vectors_load_problem(meta(), 300) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, 10),
        (meta(count=10), 10),
        (meta(count=11), 10),
        (meta(count=9), 10),
        (meta(count=0), 0),
        (b"{", 10),
        (meta(count="10"), 10),
    ],
)
def test_refused_exactly_when_the_servers_repair_would_reload(
    raw: bytes | None, expected: int
) -> None:
    """A load the repair calls complete is never refused (it would never be fixed), and
    one it would reload is (the index would serve fallbacks until it did)."""
    complete = assess(raw, expected, []) is VectorHealth.COMPLETE
    assert (vectors_load_problem(raw, expected) is None) == complete
