"""The asset chain train → vectors → index → ship as docs/runbook.md describes it, the
shared pool, and the typed params refusing a bad run conf (parsed DAGs, nothing run)."""

from __future__ import annotations

import importlib.util
from types import ModuleType, SimpleNamespace

import pytest

from pipelines import assets
from pipelines.runner import DAGS_FOLDER, PipelineError, check_conf
from recall_settings import defaults


@pytest.fixture(scope="module")
def dags_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "recall_pipelines_assets", DAGS_FOLDER / "recall_pipelines.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outlets(dag: object) -> dict[str, list[str]]:
    return {
        task_id: [a.name for a in task.outlets]
        for task_id, task in dag.task_dict.items()  # type: ignore[attr-defined]
        if task.outlets
    }


def test_producers_emit_the_chain_assets(dags_module: ModuleType) -> None:
    train = dags_module.recall_train_and_index()
    assert _outlets(train) == {
        "model_gate": ["recall_model"],
        "load_user_vectors": ["recall_user_vectors"],
        "build_index": ["recall_index"],
    }
    rebuild = dags_module.recall_rebuild_index()
    assert _outlets(rebuild) == {
        "load_user_vectors": ["recall_user_vectors"],
        "rebuild_index": ["recall_index"],
    }
    assert (assets.MODEL.uri, assets.USER_VECTORS.uri, assets.INDEX.uri) == (
        "recall://artifacts/models",
        "recall://redis/user-vectors",
        "recall://artifacts/indexes",
    )


def test_ship_dag_is_scheduled_by_the_index_asset(dags_module: ModuleType) -> None:
    ship = dags_module.recall_ship()
    condition = ship.timetable.asset_condition
    assert [a.name for a in condition.objects] == ["recall_index"]
    assert {(u, d) for d, t in ship.task_dict.items() for u in t.upstream_task_ids} == {
        ("ship", "prune_user_vectors")
    }
    # The producers' DAGs are time-scheduled, not by assets: the chain has one entry.
    assert dags_module.recall_train_and_index().schedule == "@daily"
    assert dags_module.recall_rebuild_index().schedule == "0 2 * * *"
    for build in (dags_module.recall_train_and_index, dags_module.recall_rebuild_index):
        assert "ship" not in build().task_dict


def test_every_store_writer_shares_one_pool(dags_module: ModuleType) -> None:
    writers = {
        "model_gate",
        "load_user_vectors",
        "build_index",
        "rebuild_index",
        "ship",
        "prune_user_vectors",
    }
    pool = defaults.PIPELINE_POOL.value()
    found = set()
    for build in (
        dags_module.recall_train_and_index,
        dags_module.recall_rebuild_index,
        dags_module.recall_ship,
    ):
        dag = build()
        assert dag.max_active_runs == 1
        for task_id, task in dag.task_dict.items():
            assert (task.pool == pool) == (task_id in writers), (dag.dag_id, task_id)
            if task.pool == pool:
                found.add(task_id)
    assert found == writers


def test_ship_reads_its_index_from_the_triggering_event(dags_module: ModuleType) -> None:
    pick = dags_module.shipped_index_uri
    event = SimpleNamespace(extra={"index_uri": "/s/indexes/v2"})
    older = SimpleNamespace(extra={"index_uri": "/s/indexes/v1"})
    assert pick({"index_uri": ""}, {assets.INDEX: [older, event]}) == "/s/indexes/v2"
    assert pick({"index_uri": "/s/indexes/v0"}, {assets.INDEX: [event]}) == "/s/indexes/v0"
    with pytest.raises(ValueError, match="no index to ship"):
        pick({"index_uri": ""}, None)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"epochs": 0}, r"param epochs: 0 is less than the minimum of 1"),
        ({"min_recall": "high"}, r"param min_recall: 'high' is not of type 'number'"),
        ({"gate_serving_tolerance": 1.5}, r"param gate_serving_tolerance: 1.5 is greater"),
        ({"gate_enforce": "yes"}, r"param gate_enforce: 'yes' is not of type 'boolean'"),
    ],
)
def test_a_bad_run_conf_is_refused_naming_the_param(
    dags_module: ModuleType, conf: dict[str, object], message: str
) -> None:
    dag = dags_module.recall_train_and_index()
    with pytest.raises(PipelineError, match=message):
        check_conf(dag, conf)
    check_conf(dag, {"epochs": 2, "min_recall": 0.5})  # a good conf passes
