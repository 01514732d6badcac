"""`recall evaluate` end to end on synthetic data: baselines, the model's exact path and its
served path (real Redis, IVF-PQ index, gRPC server), the report and its plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.catalog import Catalog
from evaluation.splits import temporal_leave_last_out
from tests.integration.harness import run_cli
from training.data.schema import load_dataset

pytestmark = pytest.mark.integration


def _random_recall(data: Path, k: int) -> float:
    """Expected recall@k of a uniformly random ranking of each user's unmasked items (P2)."""
    interactions = load_dataset(data).interactions
    split = temporal_leave_last_out(interactions)
    n_items = Catalog.from_interactions(interactions).n_items
    masked = split.masked.groupby("user_id").size()
    return float(np.mean([k / (n_items - masked[u]) for u in split.test["user_id"]]))


def test_evaluate_p2_exact_and_served(tmp_path: Path) -> None:
    data = tmp_path / "synthetic"
    made = run_cli(
        ["data", "synth", str(data), "--users", "300", "--items", "400", "--per-user", "20"],
        tmp_path,
    )
    assert made.returncode == 0, made.stderr
    out = tmp_path / "report"
    ran = run_cli(
        ["evaluate", "--data", str(data), "--protocol", "p2", "--epochs", "20", "--out", str(out)],
        tmp_path,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "EASE" in ran.stdout and "served" in ran.stdout

    for name in ("report.md", "results.json", "metrics_p2.png", "learning_curve_p2_default.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "metrics_p2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "temporal leave-last-one-out" in report and "cold users" in report

    doc = json.loads((out / "results.json").read_text())
    by = {(r["method"], r["path"]): r["metrics"] for r in doc["results"]}
    assert set(by) == {
        ("Pop", "exact"),
        ("ItemKNN", "exact"),
        ("EASE", "exact"),
        ("two-tower", "exact"),
        ("two-tower", "served"),
    }
    (run,) = doc["runs"]
    assert run["served"]["sources"] == {"SOURCE_USER_VECTOR": doc["protocols"][0]["test_users"]}

    random10 = _random_recall(data, 10)
    exact, served = by[("two-tower", "exact")], by[("two-tower", "served")]
    for path in (exact, served, by[("EASE", "exact")]):
        assert path["recall@10"] > 2 * random10, (path, random10)
    # IVF-PQ keeps most of the exact top-k: the served answers stay close to exact search.
    assert served["recall@100"] >= 0.85 * exact["recall@100"]
    assert abs(served["recall@10"] - exact["recall@10"]) <= 0.3 * exact["recall@10"] + 0.02


def test_evaluate_refuses_unknown_protocol_and_variant(tmp_path: Path) -> None:
    bad = run_cli(["evaluate", "--protocol", "p9", "--data", str(tmp_path)], tmp_path)
    assert bad.returncode == 1 and "p9" in bad.stderr
    bad = run_cli(["evaluate", "--variant", "nope", "--data", str(tmp_path)], tmp_path)
    assert bad.returncode == 1 and "nope" in bad.stderr and "default" in bad.stderr
    bad = run_cli(["evaluate", "--min-recall", "1.5", "--data", str(tmp_path)], tmp_path)
    assert bad.returncode == 1 and "--min-recall 1.5" in bad.stderr
    missing = run_cli(["evaluate", "--data", str(tmp_path / "absent")], tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
