"""The DAG wiring (parsed, not run) and the runner's pure helpers."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from pipelines.runner import last_exception_line, progress_message
from tests.unit.dag_file import load_dag_file


@pytest.fixture(scope="module")
def dags_module() -> ModuleType:
    return load_dag_file("recall_pipelines")


def _edges(dag: object) -> set[tuple[str, str]]:
    return {
        (upstream, downstream)
        for downstream, task in dag.task_dict.items()  # type: ignore[attr-defined]
        for upstream in task.upstream_task_ids
    }


def test_each_link_declares_the_params_it_uses(dags_module: ModuleType) -> None:
    """A link declares what its tasks read; `recall pipeline run` hands each only those."""
    assert set(dags_module.recall_train().params.keys()) == {
        "data_dir",
        "artifact_root",
        "epochs",
        "train_config",
        "gate_popularity_margin",
        "gate_serving_tolerance",
        "gate_enforce",
    }
    assert set(dags_module.recall_vectors().params.keys()) == {
        "data_dir",
        "artifact_root",
        "redis_url",
        "history_max_items",
        "model_uri",
    }
    assert set(dags_module.recall_index().params.keys()) == {
        "artifact_root",
        "redis_url",
        "min_recall",
        "index_fast_scan",
        "fleet",
        "model_uri",
    }
    # Empty by default: the triggering event's version, else models/LATEST.
    for build in (dags_module.recall_vectors, dags_module.recall_index):
        assert build().params["model_uri"] == ""


def test_rebuild_dag_starts_from_the_latest_model(dags_module: ModuleType) -> None:
    dag = dags_module.recall_rebuild_index()
    assert _edges(dag) == {
        ("index_outdated", "latest_model"),
        ("index_outdated", "seed_histories"),
        ("latest_model", "load_user_vectors"),
        ("load_user_vectors", "embed_fresh_items"),
        ("embed_fresh_items", "rebuild_index"),
        ("seed_histories", "rebuild_index"),
    }
    # Nothing of the run happens unless the check says the index is out of date.
    assert dag.task_dict["index_outdated"].__class__.__name__ == "_ShortCircuitDecoratedOperator"


def test_idempotent_tasks_retry_and_every_run_reports_its_outcome(
    dags_module: ModuleType,
) -> None:
    from pipelines import run_metrics

    for build in (
        dags_module.recall_train,
        dags_module.recall_vectors,
        dags_module.recall_index,
        dags_module.recall_rebuild_index,
        dags_module.recall_ship,
        dags_module.recall_refresh_vectors,
    ):
        dag = build()
        assert dag.max_active_runs == 1
        assert dag.on_success_callback in (run_metrics.on_success, [run_metrics.on_success])
        assert dag.on_failure_callback in (run_metrics.on_failure, [run_metrics.on_failure])
        for task_id, task in dag.task_dict.items():
            idempotent = task_id in {
                "load_user_vectors",
                "check_user_vectors",
                "embed_fresh_items",
                "seed_histories",
                "prune_user_vectors",
                "refresh_touched_users",
            }
            assert (task.retries > 0) == idempotent, task_id
            if idempotent:
                assert task.retry_exponential_backoff


def test_run_metrics_file_counts_runs_and_keeps_other_dags(tmp_path: Path) -> None:
    from pipelines.run_metrics import read_samples, record_run

    path = tmp_path / "metrics" / "pipelines.prom"
    record_run("recall_train", True, path=path, now=1000.0)
    record_run("recall_train", False, path=path, now=2000.0)
    record_run("recall_rebuild_index", True, path=path, now=3000.0)
    record_run("recall_train", True, path=path, now=4000.0)
    samples = read_samples(path)
    train = (("dag", "recall_train"),)
    assert samples[("recall_pipeline_last_success_timestamp_seconds", train)] == 4000.0
    assert samples[("recall_pipeline_last_failure_timestamp_seconds", train)] == 2000.0
    runs = "recall_pipeline_runs_total"
    assert samples[(runs, (("dag", "recall_train"), ("outcome", "success")))] == 2
    assert samples[(runs, (("dag", "recall_train"), ("outcome", "failed")))] == 1
    rebuild = (("dag", "recall_rebuild_index"),)
    assert samples[("recall_pipeline_last_success_timestamp_seconds", rebuild)] == 3000.0
    text = path.read_text()
    assert "# TYPE recall_pipeline_runs_total counter" in text
    assert not list(path.parent.glob(".pipelines-*"))  # no temporary file left behind


def test_hourly_refresh_dag_re_encodes_touched_users(dags_module: ModuleType) -> None:
    dag = dags_module.recall_refresh_vectors()
    assert dag.dag_id == "recall_refresh_vectors"
    assert set(dag.task_dict) == {"refresh_touched_users"}
    assert set(dag.params.keys()) >= {"artifact_root", "redis_url"}


def test_dag_file_imports_neither_tensorflow_nor_faiss_at_parse_time(
    dags_module: ModuleType,
) -> None:
    names = set(vars(dags_module))
    assert not names & {"tensorflow", "tf", "faiss", "training", "serving"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "2026-11-23T08:20:16Z [info ] [DAG TEST] starting task_id=train map_index=-1",
            "running task train",
        ),
        (
            "2026-11-23T08:20:38Z [info ] validate epoch 3/20 loss 6.4356 "
            "(val_recall@10 0.2134, val_ndcg@10 0.1086)  [training.train]",
            "train (validate): epoch 3/20, loss 6.4356",
        ),
        (
            "[info] index IVF43,PQ16x8: recall@10=0.8668 (min 0.80)",
            "build_index: IVF43,PQ16x8, recall@10 0.8668",
        ),
        ("[info] Task instance state updated", None),
        (
            "[serving.fleet] shipped index 2026-b to 3 servers (canary 10.0.0.1:50052) in 4.1 s",
            "ship: shipped index 2026-b to 3 servers",
        ),
        (
            "WARNING not shipping index 2026-c: indexes are pinned to 2026-a by ops at ...",
            "ship: not shipping 2026-c (indexes are pinned to 2026-a)",
        ),
    ],
)
def test_progress_message(line: str, expected: str | None) -> None:
    assert progress_message(line) == expected


def test_last_exception_line_finds_the_root_failure() -> None:
    log = "\n".join(
        [
            "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6399.",
            "The above exception was the direct cause of the following exception:",
            "serving.errors.BackendUnavailable: writing user vectors to Redis failed: Error 111",
            "[info] marking run failed",
        ]
    )
    assert last_exception_line(log).startswith("serving.errors.BackendUnavailable: writing")
    assert last_exception_line("all good\n") == ""
