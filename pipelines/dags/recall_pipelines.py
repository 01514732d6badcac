"""Recall DAGs: one asset-driven chain, train → vectors → index → ship (pipelines/assets.py).

- ``recall_train_and_index`` (daily): train the towers (the model is published but
  ``models/LATEST`` does not move) → the model gate (held-out metrics vs popularity and
  vs the serving model; a failure fails the run and nothing else is published, a pass
  moves ``models/LATEST`` and emits the ``MODEL`` asset) → load the new user vectors into
  Redis (``USER_VECTORS``) → build, gate and publish the IVF-PQ index (``INDEX``). Vectors
  load *before* the index is published, so a server that hot-swaps to the new index finds
  its model's vectors.
- ``recall_ship`` (``schedule=[INDEX]``: every published index schedules it): ship the index
  of the triggering event (``serving.fleet.ship_published``) → delete user vectors that no
  recent index needs. With a fleet configured (``fleet``, env ``RECALL_FLEET``) the index
  is published *without* moving ``indexes/LATEST``, and ship loads it on the canary,
  verifies it, promotes LATEST, then loads and verifies the rest; any failure reverts the
  fleet and fails the run. No fleet: a no-op that says so (servers poll LATEST). While
  ``indexes/PIN`` is set: published, not shipped (logged).
- ``recall_rebuild_index`` (nightly): only when the LATEST index is not what a rebuild
  would produce (``serving.tasks.rebuild_reason``: no index, built from another model than
  ``models/LATEST``, index configuration, search tuning, gate minimum or Faiss changed;
  otherwise every task is skipped and no asset event is emitted), rebuild the index from
  the LATEST model (vectors are re-loaded first, idempotently); its ``INDEX`` event
  schedules the same ship. Its index is promoted only if its model is still
  ``models/LATEST`` when the build ends (``StaleModel`` otherwise: a training run that
  promoted a newer model meanwhile is never rolled back).
- Hygiene: one active run per DAG (``max_active_runs=1``), and every task that writes the
  artifact store, the Redis vectors or the fleet runs in one Airflow pool of one slot
  (``pipeline_pool``, ``recall_store``; `recall pipeline run` creates it, a deployment
  creates it once: docs/runbook.md), so the DAGs that write the same store never
  interleave those writes. The Redis tasks (vectors, histories, pruning, refresh) are
  idempotent and retry with exponential backoff; every run's outcome goes to
  ``pipelines.run_metrics`` (a textfile metric behind the ``RecallPipelineStale`` and
  ``RecallPipelineFailed`` alerts).
- Both index DAGs seed the users' history lists (``recall:hist:<user_id>``) from the data
  directory before the index is published, so the seen filter and the refresher start
  from the data.
- ``recall_refresh_vectors`` (hourly): re-encode every user touched by RecordInteractions
  since its previous run, with the serving model's user tower (covers anything the
  ``recall refresher`` worker missed).

Params are typed Airflow ``Param``s generated from ``recall_settings.defaults`` (type,
bounds, description; default ``$RECALL_<NAME>`` at parse time, else the shared default),
so a run triggered with bad ``conf`` (``epochs: 0``, ``min_recall: "high"``) is refused
before any task runs, naming the param.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines import run_metrics
from pipelines.assets import INDEX, INDEX_URI, MODEL, MODEL_URI, USER_VECTORS
from recall_settings import defaults

# Idempotent tasks (Redis writes that converge) retry with backoff: a Redis restart or a
# failover during the nightly run costs a retry, not the run.
_RETRY: dict[str, Any] = {
    "retries": defaults.TASK_RETRIES.value(),
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}
# Writers of the artifact store, the Redis vectors or the fleet: one at a time across DAGs.
_POOL = defaults.PIPELINE_POOL.value()
_CALLBACKS: dict[str, Any] = {
    "on_success_callback": run_metrics.on_success,
    "on_failure_callback": run_metrics.on_failure,
}


def _params(*settings: defaults.Setting[Any]) -> dict[str, Param]:
    """Typed Airflow params of shared settings: default from the environment at parse
    time, JSON Schema (type, minimum/maximum, enum) and description from the setting."""
    return {
        s.name: Param(s.value(), description=s.description, **s.json_schema()) for s in settings
    }


_INDEX_PARAMS = (
    defaults.DATA_DIR,
    defaults.ARTIFACT_ROOT,
    defaults.REDIS_URL,
    defaults.MIN_RECALL,
    defaults.HISTORY_MAX_ITEMS,
    defaults.FLEET,
)
TRAIN_PARAMS = _params(
    *_INDEX_PARAMS,
    defaults.EPOCHS,
    defaults.TRAIN_CONFIG,
    defaults.GATE_POPULARITY_MARGIN,
    defaults.GATE_SERVING_TOLERANCE,
    defaults.GATE_ENFORCE,
)
REBUILD_PARAMS = _params(*_INDEX_PARAMS)
SHIP_PARAMS = {
    **_params(
        defaults.ARTIFACT_ROOT,
        defaults.REDIS_URL,
        defaults.FLEET,
        defaults.FLEET_CANARY,
        defaults.KEEP_INDEXES,
    ),
    INDEX_URI: Param(
        "",
        type="string",
        description="Index to ship; empty: the one the triggering INDEX asset event names.",
    ),
}
REFRESH_PARAMS = _params(defaults.ARTIFACT_ROOT, defaults.REDIS_URL)
_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@task
def train(params: dict[str, Any] | None = None) -> str:
    from training import tasks

    assert params is not None
    return tasks.train(
        params["data_dir"],
        params["artifact_root"],
        {"epochs": params["epochs"]},
        config_file=params.get("train_config") or None,
        promote=False,
    )


@task(outlets=[MODEL], pool=_POOL)
def model_gate(
    model_uri: str, params: dict[str, Any] | None = None, outlet_events: Any = None
) -> str:
    from artifacts.model_gate import ModelGateConfig, gate_and_promote

    assert params is not None
    config = ModelGateConfig(
        popularity_margin=params["gate_popularity_margin"],
        serving_tolerance=params["gate_serving_tolerance"],
        enforce=params["gate_enforce"],
    )
    promoted = gate_and_promote(model_uri, config)
    outlet_events[MODEL].extra = {MODEL_URI: promoted}
    return promoted


@task
def latest_model(params: dict[str, Any] | None = None) -> str:
    from artifacts.store import ArtifactStore

    assert params is not None
    store = ArtifactStore(params["artifact_root"])
    return store.uri("models", store.latest("models"))


@task(outlets=[USER_VECTORS], pool=_POOL, **_RETRY)
def load_user_vectors(
    model_uri: str, params: dict[str, Any] | None = None, outlet_events: Any = None
) -> str:
    from serving import tasks

    assert params is not None
    tasks.load_vectors(model_uri, params["redis_url"])
    outlet_events[USER_VECTORS].extra = {MODEL_URI: model_uri}
    return model_uri


@task(outlets=[INDEX], pool=_POOL)
def build_index(
    model_uri: str, params: dict[str, Any] | None = None, outlet_events: Any = None
) -> str:
    from serving import tasks

    assert params is not None
    # With a fleet, LATEST moves only in `ship`, after a verified canary (watchers and the
    # fleet then never disagree about what is current).
    uri = tasks.build_index(
        model_uri,
        min_recall=params["min_recall"],
        set_latest=not params["fleet"].strip(),
        redis_url=params["redis_url"],
    )
    outlet_events[INDEX].extra = {INDEX_URI: uri}
    return uri


@task(outlets=[INDEX], pool=_POOL)
def rebuild_index(
    model_uri: str, params: dict[str, Any] | None = None, outlet_events: Any = None
) -> str:
    from serving import tasks

    assert params is not None
    try:
        uri = tasks.build_index(
            model_uri,
            min_recall=params["min_recall"],
            set_latest=not params["fleet"].strip(),
            require_latest_model=True,
            redis_url=params["redis_url"],
        )
    except tasks.StaleModel as exc:
        raise AirflowSkipException(str(exc)) from exc  # skipped: no INDEX event, no ship
    outlet_events[INDEX].extra = {INDEX_URI: uri}
    return uri


@task(**_RETRY)
def embed_fresh_items(model_uri: str, params: dict[str, Any] | None = None) -> str:
    """Embed the items added since training with this model: the build folds them in."""
    from training import fresh_items

    assert params is not None
    fresh_items.embed_fresh_items(model_uri, params["redis_url"])
    return model_uri


@task.short_circuit
def index_outdated(params: dict[str, Any] | None = None) -> bool:
    from serving import tasks

    assert params is not None
    reason = tasks.rebuild_reason(
        params["artifact_root"], params["min_recall"], params["redis_url"]
    )
    print(f"rebuild: {reason}" if reason else "rebuild: the LATEST index is current; skipped")
    return reason is not None


def shipped_index_uri(params: dict[str, Any], triggering_asset_events: Any) -> str:
    """The index a ``recall_ship`` run ships: the ``index_uri`` param when given (a manual
    run, or `recall pipeline run` handing over the event), else the newest triggering
    ``INDEX`` event's ``index_uri`` extra.

    Raises:
        ValueError: neither names an index (a manual run without ``index_uri``).
    """
    if params.get(INDEX_URI):
        return str(params[INDEX_URI])
    try:
        events = list(triggering_asset_events[INDEX]) if triggering_asset_events else []
    except KeyError:  # triggered by other assets only
        events = []
    for event in reversed(events):
        uri = (event.extra or {}).get(INDEX_URI)
        if uri:
            return str(uri)
    raise ValueError(
        f"no index to ship: trigger recall_ship with conf {{'{INDEX_URI}': ...}} or let an "
        f"{INDEX.name} asset event schedule it"
    )


@task(pool=_POOL)
def ship(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> str:
    from serving.fleet import FleetSettings, ship_published

    assert params is not None
    index_uri = shipped_index_uri(params, triggering_asset_events)
    settings = FleetSettings(fleet=params["fleet"], fleet_canary=params["fleet_canary"])
    return ship_published(index_uri, settings)


@task(**_RETRY)
def seed_histories(params: dict[str, Any] | None = None) -> int:
    from training import histories

    assert params is not None
    return histories.seed_histories(
        params["data_dir"], params["redis_url"], params["history_max_items"]
    )


@task(**_RETRY)
def refresh_touched_users(params: dict[str, Any] | None = None) -> int:
    from training import refresher

    assert params is not None
    return refresher.refresh_touched_users(params["artifact_root"], params["redis_url"])


@task(pool=_POOL, **_RETRY)
def prune_user_vectors(params: dict[str, Any] | None = None) -> list[str]:
    from serving import tasks

    assert params is not None
    return tasks.prune_vectors(params["artifact_root"], params["redis_url"], params["keep_indexes"])


@dag(
    dag_id="recall_train_and_index",
    schedule="@daily",
    start_date=_START,
    catchup=False,
    max_active_runs=1,
    params=TRAIN_PARAMS,
    tags=["recall"],
    **_CALLBACKS,
)
def recall_train_and_index() -> None:
    index = build_index(embed_fresh_items(load_user_vectors(model_gate(train()))))
    seed_histories() >> index


@dag(
    dag_id="recall_rebuild_index",
    schedule="0 2 * * *",
    start_date=_START,
    catchup=False,
    max_active_runs=1,
    params=REBUILD_PARAMS,
    tags=["recall"],
    **_CALLBACKS,
)
def recall_rebuild_index() -> None:
    check = index_outdated()
    model = latest_model()
    seeded = seed_histories()
    check >> [model, seeded]
    index = rebuild_index(embed_fresh_items(load_user_vectors(model)))
    seeded >> index


@dag(
    dag_id="recall_ship",
    schedule=[INDEX],
    start_date=_START,
    catchup=False,
    max_active_runs=1,
    params=SHIP_PARAMS,
    tags=["recall"],
    **_CALLBACKS,
)
def recall_ship() -> None:
    ship() >> prune_user_vectors()


@dag(
    dag_id="recall_refresh_vectors",
    schedule="@hourly",
    start_date=_START,
    catchup=False,
    max_active_runs=1,
    params=REFRESH_PARAMS,
    tags=["recall"],
    **_CALLBACKS,
)
def recall_refresh_vectors() -> None:
    refresh_touched_users()


recall_train_and_index()
recall_rebuild_index()
recall_ship()
recall_refresh_vectors()
