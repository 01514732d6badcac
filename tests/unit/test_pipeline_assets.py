"""The asset chain train → vectors → index → ship as docs/runbook.md describes it (one DAG
per link, each scheduled on the previous link's asset), which version each link works on,
the shared pool, and the typed params refusing a bad run conf (parsed DAGs, nothing run)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from artifacts.errors import ArtifactNotFound
from pipelines import assets
from pipelines.runner import PipelineError, check_conf
from recall_settings import defaults
from tests.unit.dag_file import load_dag_file


@pytest.fixture(scope="module")
def dags_module() -> ModuleType:
    return load_dag_file("recall_pipelines_assets")


def _outlets(dag: object) -> dict[str, list[str]]:
    return {
        task_id: [a.name for a in task.outlets]
        for task_id, task in dag.task_dict.items()  # type: ignore[attr-defined]
        if task.outlets
    }


def _schedule(dag: object) -> list[str]:
    """The asset names a DAG is scheduled on ([] for a time-scheduled DAG)."""
    condition = getattr(dag.timetable, "asset_condition", None)  # type: ignore[attr-defined]
    return [a.name for a in condition.objects] if condition is not None else []


def test_each_link_is_a_dag_scheduled_on_the_previous_links_asset(
    dags_module: ModuleType,
) -> None:
    """recall_train (daily) ─► MODEL ─► recall_vectors ─► USER_VECTORS ─► recall_index ─►
    INDEX ─► recall_ship: every link emits exactly the asset the next one is scheduled on."""
    chain = [
        (dags_module.recall_train(), [], {"model_gate": ["recall_model"]}),
        (
            dags_module.recall_vectors(),
            ["recall_model"],
            {"load_user_vectors": ["recall_user_vectors"]},
        ),
        (dags_module.recall_index(), ["recall_user_vectors"], {"build_index": ["recall_index"]}),
        (dags_module.recall_ship(), ["recall_index"], {}),
    ]
    for dag, schedule, outlets in chain:
        assert _schedule(dag) == schedule, dag.dag_id
        assert _outlets(dag) == outlets, dag.dag_id
    assert chain[0][0].schedule == "@daily"  # the chain's one time-scheduled entry
    assert (assets.MODEL.uri, assets.USER_VECTORS.uri, assets.INDEX.uri) == (
        "recall://artifacts/models",
        "recall://redis/user-vectors",
        "recall://artifacts/indexes",
    )


def test_the_links_tasks_in_order(dags_module: ModuleType) -> None:
    def edges(dag: object) -> set[tuple[str, str]]:
        return {
            (u, d)
            for d, t in dag.task_dict.items()  # type: ignore[attr-defined]
            for u in t.upstream_task_ids
        }

    assert edges(dags_module.recall_train()) == {
        ("validate_data", "model_gate"),
        ("train", "model_gate"),
    }
    # The vectors event (which schedules the index build) waits for the histories too.
    assert edges(dags_module.recall_vectors()) == {
        ("vectors_model", "load_user_vectors"),
        ("seed_histories", "load_user_vectors"),
    }
    assert edges(dags_module.recall_index()) == {
        ("index_model", "check_user_vectors"),
        ("check_user_vectors", "embed_fresh_items"),
        ("embed_fresh_items", "build_index"),
    }
    assert edges(dags_module.recall_ship()) == {("ship", "prune_user_vectors")}


def test_the_rebuild_publishes_an_index_without_restarting_the_chain(
    dags_module: ModuleType,
) -> None:
    """The nightly rebuild reloads vectors too, but a USER_VECTORS (or MODEL) event from it
    would schedule recall_index for a second build of the same model."""
    rebuild = dags_module.recall_rebuild_index()
    assert rebuild.schedule == "0 2 * * *"
    assert _outlets(rebuild) == {"rebuild_index": ["recall_index"]}
    for build in (dags_module.recall_train, dags_module.recall_rebuild_index):
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
        dags_module.recall_train,
        dags_module.recall_vectors,
        dags_module.recall_index,
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


def test_a_link_works_on_the_model_its_event_names_else_latest(
    dags_module: ModuleType, tmp_path: Path
) -> None:
    from artifacts.store import ArtifactStore

    pick = dags_module.model_to_use
    root = tmp_path / "store"
    (root / "models" / "20260101T000000Z-aaaaaa").mkdir(parents=True)
    ArtifactStore(str(root)).set_latest("models", "20260101T000000Z-aaaaaa")
    params = {"artifact_root": str(root), "model_uri": ""}
    newer = SimpleNamespace(extra={"model_uri": "/s/models/v2"})
    older = SimpleNamespace(extra={"model_uri": "/s/models/v1"})
    events = {assets.USER_VECTORS: [older, newer]}
    assert pick(params, events, assets.USER_VECTORS) == "/s/models/v2"  # the newest event
    assert pick({**params, "model_uri": "/s/m/v0"}, events, assets.USER_VECTORS) == "/s/m/v0"
    # A manual trigger (no event; or events of another asset only): models/LATEST.
    latest = str(root / "models" / "20260101T000000Z-aaaaaa")
    assert pick(params, None, assets.USER_VECTORS) == latest
    assert pick(params, {assets.MODEL: [newer]}, assets.USER_VECTORS) == latest
    with pytest.raises(ArtifactNotFound, match="no models published yet"):
        pick({"artifact_root": str(tmp_path / "empty"), "model_uri": ""}, None, assets.MODEL)


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
    # Each value goes to the link that declares it (the runner passes each its own keys).
    name = next(iter(conf))
    dag = next(
        dag
        for dag in (dags_module.recall_train(), dags_module.recall_index())
        if name in dag.params
    )
    with pytest.raises(PipelineError, match=message):
        check_conf(dag, conf)
    check_conf(dag, {name: dag.params[name]})  # its default passes
