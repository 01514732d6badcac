"""The session's `recall pipeline run` (Airflow dag.test) emitted the chain's asset events,
and the index event scheduled recall_ship on the index it announced (read from the run's
own Airflow metadata DB)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.integration.harness import Pipeline

pytestmark = pytest.mark.integration


def test_a_training_run_emits_asset_events_that_schedule_the_ship(pipeline: Pipeline) -> None:
    db = pipeline.home / "airflow" / "airflow.db"
    with sqlite3.connect(db) as conn:
        events = conn.execute(
            "SELECT a.name, e.extra, e.source_run_id FROM asset_event e "
            "JOIN asset a ON a.id = e.asset_id "
            "WHERE e.source_dag_id = 'recall_train_and_index' ORDER BY e.id"
        ).fetchall()
        ships = conn.execute(
            "SELECT conf, state FROM dag_run WHERE dag_id = 'recall_ship'"
        ).fetchall()
    by_name = {name: json.loads(extra) for name, extra, _ in events}
    assert [name for name, _, _ in events] == [
        "recall_model",
        "recall_user_vectors",
        "recall_index",
    ]
    assert len({run for _, _, run in events}) == 1  # all from the one training run
    assert Path(by_name["recall_model"]["model_uri"]).name == pipeline.model_dir.name
    assert Path(by_name["recall_index"]["index_uri"]).name == pipeline.index_dir.name
    # The index event scheduled recall_ship, which shipped exactly that index.
    assert len(ships) == 1
    conf, state = ships[0]
    assert state == "success"
    assert Path(json.loads(conf)["index_uri"]).name == pipeline.index_dir.name
