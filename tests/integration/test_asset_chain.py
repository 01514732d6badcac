"""The asset chain as `recall pipeline run` (Airflow dag.test) runs it: recall_train →
recall_vectors → recall_index → recall_ship, each link scheduled by the previous link's
asset event and working on the version that event names (read from the run's own Airflow
metadata DB); a failed recall_index leaves the previous index LATEST and ships nothing; and a
manual recall_index for a model whose user vectors are not in Redis is refused before the
build, until they are loaded."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recall_cli.local_redis import LocalRedis, free_port
from serving.tasks import load_vectors
from tests.integration.harness import RECALL, Pipeline, latest, manifest

pytestmark = pytest.mark.integration

CHAIN = ["recall_train", "recall_vectors", "recall_index", "recall_ship"]


def test_each_link_is_scheduled_by_the_previous_links_asset_event(pipeline: Pipeline) -> None:
    db = pipeline.home / "airflow" / "airflow.db"
    with sqlite3.connect(db) as conn:
        events = conn.execute(
            "SELECT a.name, e.extra, e.source_dag_id FROM asset_event e "
            "JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
        ).fetchall()
        runs = conn.execute(
            "SELECT dag_id, conf, state FROM dag_run ORDER BY start_date, id"
        ).fetchall()
    # One event per link, in chain order, each from the DAG that owns that link.
    assert [(name, dag) for name, _, dag in events] == [
        ("recall_model", "recall_train"),
        ("recall_user_vectors", "recall_vectors"),
        ("recall_index", "recall_index"),
    ]
    extra = {name: json.loads(text) for name, text, _ in events}
    model, index = pipeline.model_dir.name, pipeline.index_dir.name
    assert Path(extra["recall_model"]["model_uri"]).name == model
    assert Path(extra["recall_model"]["data_dir"]) == pipeline.data.resolve()
    assert Path(extra["recall_user_vectors"]["model_uri"]).name == model
    assert Path(extra["recall_index"]["index_uri"]).name == index
    # Every link ran once, in order, and succeeded; each consumer was told the version its
    # triggering event announced (the runner hands the extra over as the run's conf).
    assert [(dag, state) for dag, _, state in runs] == [(d, "success") for d in CHAIN]
    conf = {dag: json.loads(text) for dag, text, _ in runs}
    assert Path(conf["recall_vectors"]["model_uri"]).name == model
    assert Path(conf["recall_index"]["model_uri"]).name == model
    assert Path(conf["recall_ship"]["index_uri"]).name == index


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    server = LocalRedis(tmp_path / "redis", free_port(), persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run_index(
    home: Path, data: Path, store: Path, redis: LocalRedis
) -> subprocess.CompletedProcess[str]:
    """A manual `recall pipeline run --dag-id recall_index` (no event, no model_uri: it works
    on models/LATEST) with RECALL_HOME=home, so its Airflow metadata DB is home's own."""
    env = {**os.environ, "RECALL_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [
            *RECALL,
            "pipeline",
            "run",
            "--dag-id",
            "recall_index",
            "--data",
            str(data),
            "--artifact-root",
            str(store),
            "--redis-url",
            redis.url,
            "--min-recall",
            "0.5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _index_run_record(home: Path) -> tuple[list[dict[str, tuple[str, int]]], int, int]:
    """From home's Airflow DB: per recall_index run (oldest first) each task's (state, try
    number), the number of asset events, and the number of recall_ship runs."""
    with sqlite3.connect(home / "airflow" / "airflow.db") as conn:
        rows = conn.execute(
            "SELECT run_id, task_id, state, try_number FROM task_instance "
            "WHERE dag_id = 'recall_index' ORDER BY start_date"
        ).fetchall()
        events = conn.execute("SELECT count(*) FROM asset_event").fetchone()[0]
        ships = conn.execute("SELECT count(*) FROM dag_run WHERE dag_id = 'recall_ship'")
        ship_runs = ships.fetchone()[0]
    runs: dict[str, dict[str, tuple[str, int]]] = {}
    for run_id, task_id, state, tries in rows:
        runs.setdefault(run_id, {})[task_id] = (state, tries)
    return list(runs.values()), events, ship_runs


def test_a_failed_index_run_keeps_the_previous_index_and_ships_nothing(
    pipeline: Pipeline, tmp_path: Path, own_redis: LocalRedis
) -> None:
    # A copy of the session's store (its LATEST index is the "last good" one) whose LATEST
    # model's item vectors no longer match their checksum: build_index refuses the model.
    # An Airflow home of its own, so the session's metadata DB stays as the test above
    # reads it. The model's user vectors are loaded first (before the corruption: the load
    # verifies the artifact), so the run gets past check_user_vectors to the build.
    store = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifact_root, store)
    before = latest(store, "indexes")
    versions = sorted(p.name for p in (store / "indexes").iterdir())
    load_vectors(str(latest(store, "models")), own_redis.url)
    (latest(store, "models") / "item_vectors.npy").write_bytes(b"not the published vectors")
    ran = _run_index(tmp_path, pipeline.data, store, own_redis)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "error: pipeline recall_index failed: " in ran.stderr, ran.stderr
    assert "item_vectors.npy" in ran.stderr, ran.stderr  # the root failure, named
    assert latest(store, "indexes") == before
    assert sorted(p.name for p in (store / "indexes").iterdir()) == versions
    runs, events, ship_runs = _index_run_record(tmp_path)
    # A manual run (no event, no model_uri) works on models/LATEST; the build is what
    # failed, so no recall_index event was emitted and recall_ship never ran.
    assert [{task: state for task, (state, _) in run.items()} for run in runs] == [
        {
            "index_model": "success",
            "check_user_vectors": "success",
            "embed_fresh_items": "success",
            "build_index": "failed",
        }
    ]
    assert (events, ship_runs) == (0, 0)


def test_a_manual_index_run_refuses_a_model_whose_vectors_are_not_loaded(
    pipeline: Pipeline, tmp_path: Path, own_redis: LocalRedis
) -> None:
    """A manual recall_index on models/LATEST against a Redis that never got the model's
    vectors fails at check_user_vectors, naming the version and the fix, at the first try
    (no retries: only a recall_vectors run changes the answer); nothing is built, LATEST
    stays, nothing ships. Once the vectors are loaded the same run builds, promotes and
    ships the index."""
    store = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifact_root, store)
    before = latest(store, "indexes")
    versions = sorted(p.name for p in (store / "indexes").iterdir())
    model = latest(store, "models")

    refused = _run_index(tmp_path, pipeline.data, store, own_redis)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "error: pipeline recall_index failed: " in refused.stderr, refused.stderr
    assert f"user vectors of model {model.name} are not loaded in Redis" in refused.stderr
    assert "meta key is absent" in refused.stderr, refused.stderr
    assert f"Trigger recall_vectors with model_uri={model}" in refused.stderr, refused.stderr
    assert latest(store, "indexes") == before
    assert sorted(p.name for p in (store / "indexes").iterdir()) == versions
    runs, events, ship_runs = _index_run_record(tmp_path)
    assert runs == [
        {
            "index_model": ("success", 1),
            "check_user_vectors": ("failed", 1),
            "embed_fresh_items": ("upstream_failed", 0),
            "build_index": ("upstream_failed", 0),
        }
    ]
    assert (events, ship_runs) == (0, 0)

    assert load_vectors(str(model), own_redis.url) == len(
        json.loads((model / "user_ids.json").read_text())
    )
    ran = _run_index(tmp_path, pipeline.data, store, own_redis)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    built = latest(store, "indexes")
    assert built != before and built.name not in versions
    assert manifest(built)["model_version"] == model.name
    runs, events, ship_runs = _index_run_record(tmp_path)
    assert {task: state for task, (state, _) in runs[-1].items()} == {
        "index_model": "success",
        "check_user_vectors": "success",
        "embed_fresh_items": "success",
        "build_index": "success",
    }
    assert (events, ship_runs) == (1, 1)
