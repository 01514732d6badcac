"""The asset chain as `recall pipeline run` (Airflow dag.test) runs it: recall_train →
recall_vectors → recall_index → recall_ship, each link scheduled by the previous link's
asset event and working on the version that event names (read from the run's own Airflow
metadata DB); and a failed recall_index leaves the previous index LATEST and ships nothing."""

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
from tests.integration.harness import RECALL, Pipeline, latest

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


def test_a_failed_index_run_keeps_the_previous_index_and_ships_nothing(
    pipeline: Pipeline, tmp_path: Path, own_redis: LocalRedis
) -> None:
    # A copy of the session's store (its LATEST index is the "last good" one) whose LATEST
    # model's item vectors no longer match their checksum: build_index refuses the model.
    # An Airflow home of its own, so the session's metadata DB stays as the test above
    # reads it.
    store = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifact_root, store)
    before = latest(store, "indexes")
    versions = sorted(p.name for p in (store / "indexes").iterdir())
    (latest(store, "models") / "item_vectors.npy").write_bytes(b"not the published vectors")
    env = {**os.environ, "RECALL_HOME": str(tmp_path), "COLUMNS": "200"}
    ran = subprocess.run(
        [
            *RECALL,
            "pipeline",
            "run",
            "--dag-id",
            "recall_index",
            "--data",
            str(pipeline.data),
            "--artifact-root",
            str(store),
            "--redis-url",
            own_redis.url,
            "--min-recall",
            "0.5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "error: pipeline recall_index failed: " in ran.stderr, ran.stderr
    assert "item_vectors.npy" in ran.stderr, ran.stderr  # the root failure, named
    assert latest(store, "indexes") == before
    assert sorted(p.name for p in (store / "indexes").iterdir()) == versions
    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as conn:
        states = dict(
            conn.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = 'recall_index'"
            ).fetchall()
        )
        events = conn.execute("SELECT count(*) FROM asset_event").fetchone()[0]
        ships = conn.execute("SELECT count(*) FROM dag_run WHERE dag_id = 'recall_ship'")
        ship_runs = ships.fetchone()[0]
    # A manual run (no event, no model_uri) works on models/LATEST; the build is what
    # failed, so no recall_index event was emitted and recall_ship never ran.
    assert states == {
        "index_model": "success",
        "embed_fresh_items": "success",
        "build_index": "failed",
    }
    assert (events, ship_runs) == (0, 0)
