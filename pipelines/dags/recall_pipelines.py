"""Recall DAGs: one asset-driven chain, train → vectors → index → ship (pipelines/assets.py),
one DAG per link, each scheduled on the asset the previous link emits.

- ``recall_train`` (daily; the chain's start, watched by ``RecallPipelineStale``): check the
  data directory's format (``validate_data``, seconds instead of a failed training) →
  train the towers (the model is published but ``models/LATEST`` does not move) → the model
  gate (held-out metrics vs popularity and vs the serving model; a failure fails the run
  and nothing else is published; a pass moves ``models/LATEST`` and emits ``MODEL`` with
  ``model_uri`` and ``data_dir``).
- ``recall_vectors`` (``schedule=[MODEL]``): seed the users' history lists
  (``recall:hist:<user_id>``) from the data the model was trained on, load the model's
  user vectors into Redis, then emit ``USER_VECTORS`` (``model_uri``).
- ``recall_index`` (``schedule=[USER_VECTORS]``): check that the model's user vectors are
  in Redis (``check_user_vectors``: a manual run on a model whose vectors were never loaded
  fails there, naming the fix, and publishes nothing), embed the items added since
  training, build, gate and publish the IVF-PQ index of that model (``INDEX``,
  ``index_uri``). Vectors load in the previous link, so a server that hot-swaps to the new
  index finds its model's vectors. The index is promoted only if its model is still
  ``models/LATEST`` when the build ends (``StaleModel``: skipped, no event), so a lagging
  link never rolls back a newer model.
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
  the LATEST model (histories and vectors are re-loaded first, idempotently, without a
  ``USER_VECTORS`` event: that would schedule ``recall_index`` for a second build); its
  ``INDEX`` event schedules the same ship, with the same ``StaleModel`` guard.
- Which version a downstream run works on (``pipelines.asset_events.announced``): its
  ``model_uri``/``index_uri`` param when given (a manual run's conf; `recall pipeline run`
  passes the event's extra that way), else the newest triggering event's extra; a manual
  trigger without either works on ``models/LATEST`` (``recall_vectors``, ``recall_index``)
  or is refused (``recall_ship``: there is no "latest unshipped index" to guess).
- Hygiene: one active run per DAG (``max_active_runs=1``), and every task that writes the
  artifact store, the Redis vectors or the fleet runs in one Airflow pool of one slot
  (``pipeline_pool``, ``recall_store``; `recall pipeline run` creates it, a deployment
  creates it once: docs/runbook.md), so the DAGs that write the same store never
  interleave those writes. The Redis tasks (vectors, histories, pruning, refresh) are
  idempotent and retry with exponential backoff; every run's outcome goes to
  ``pipelines.run_metrics`` (a textfile metric behind the ``RecallPipelineStale`` and
  ``RecallPipelineFailed`` alerts).
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
import logging
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pipelines import run_metrics
from pipelines.asset_events import announced
from pipelines.assets import DATA_DIR, INDEX, INDEX_URI, MODEL, MODEL_URI, USER_VECTORS
from recall_settings import defaults

log = logging.getLogger(__name__)

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


def _params(*settings: defaults.Setting[Any]) -> dict[str, Param]:
    """Typed Airflow params of shared settings: default from the environment at parse
    time, JSON Schema (type, minimum/maximum, enum) and description from the setting."""
    return {
        s.name: Param(s.value(), description=s.description, **s.json_schema()) for s in settings
    }


def _uri_param(description: str) -> Param:
    return Param("", type="string", description=description)


TRAIN_PARAMS = _params(
    defaults.DATA_DIR,
    defaults.ARTIFACT_ROOT,
    defaults.EPOCHS,
    defaults.TRAIN_CONFIG,
    defaults.GATE_POPULARITY_MARGIN,
    defaults.GATE_SERVING_TOLERANCE,
    defaults.GATE_ENFORCE,
)
VECTORS_PARAMS = {
    **_params(
        defaults.DATA_DIR, defaults.ARTIFACT_ROOT, defaults.REDIS_URL, defaults.HISTORY_MAX_ITEMS
    ),
    MODEL_URI: _uri_param(
        "Model whose vectors to load; empty: the triggering recall_model event's, else "
        "models/LATEST. The histories come from the event's data_dir, else the data_dir param."
    ),
}
INDEX_PARAMS = {
    **_params(
        defaults.ARTIFACT_ROOT,
        defaults.REDIS_URL,
        defaults.MIN_RECALL,
        defaults.INDEX_FAST_SCAN,
        defaults.FLEET,
    ),
    MODEL_URI: _uri_param(
        "Model to index; empty: the triggering recall_user_vectors event's, else models/LATEST "
        "(whose vectors must already be in Redis)."
    ),
}
REBUILD_PARAMS = _params(
    defaults.DATA_DIR,
    defaults.ARTIFACT_ROOT,
    defaults.REDIS_URL,
    defaults.MIN_RECALL,
    defaults.INDEX_FAST_SCAN,
    defaults.HISTORY_MAX_ITEMS,
    defaults.FLEET,
)
SHIP_PARAMS = {
    **_params(
        defaults.ARTIFACT_ROOT,
        defaults.REDIS_URL,
        defaults.FLEET,
        defaults.FLEET_CANARY,
        defaults.KEEP_INDEXES,
    ),
    INDEX_URI: _uri_param(
        "Index to ship; empty: the one the triggering recall_index asset event names."
    ),
}
REFRESH_PARAMS = _params(defaults.ARTIFACT_ROOT, defaults.REDIS_URL)
_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# What every DAG here shares: no backfill, one run at a time (runs of one DAG never
# interleave; the store pool serialises the DAGs), and the run-outcome metrics.
_EVERY_DAG: dict[str, Any] = {
    "start_date": _START,
    "catchup": False,
    "max_active_runs": 1,
    "tags": ["recall"],
    "on_success_callback": run_metrics.on_success,
    "on_failure_callback": run_metrics.on_failure,
}


def _latest_model_uri(artifact_root: str) -> str:
    from artifacts.store import ArtifactStore

    store = ArtifactStore(artifact_root)
    return store.uri("models", store.latest("models"))


def model_to_use(params: dict[str, Any], triggering_asset_events: Any, asset: Asset) -> str:
    """The model a ``recall_vectors``/``recall_index`` run works on: its ``model_uri`` param,
    else the newest triggering ``asset`` event's ``model_uri``, else ``models/LATEST`` of
    ``artifact_root`` (a manual trigger). Logs which one and why.

    Raises:
        ArtifactNotFound: the LATEST fallback, and no model is published.
    """
    uri = announced(params, triggering_asset_events, asset, MODEL_URI)
    if uri:
        log.info("model %s (from the run's conf or its %s event)", uri, asset.name)
        return uri
    uri = _latest_model_uri(params["artifact_root"])
    log.info("model %s (models/LATEST: no %s given, no asset event)", uri, MODEL_URI)
    return uri


def shipped_index_uri(params: dict[str, Any], triggering_asset_events: Any) -> str:
    """The index a ``recall_ship`` run ships: the ``index_uri`` param when given (a manual
    run, or `recall pipeline run` handing over the event), else the newest triggering
    ``INDEX`` event's ``index_uri`` extra.

    Raises:
        ValueError: neither names an index (a manual run without ``index_uri``).
    """
    uri = announced(params, triggering_asset_events, INDEX, INDEX_URI)
    if uri:
        return uri
    raise ValueError(
        f"no index to ship: trigger recall_ship with conf {{'{INDEX_URI}': ...}} or let an "
        f"{INDEX.name} asset event schedule it"
    )


# ---------------------------------------------------------------- recall_train
@task
def validate_data(params: dict[str, Any] | None = None) -> str:
    """Fail in seconds, naming the file and column, on a data directory that breaks the
    format (DESIGN.md "Input data"), instead of after the pool wait and the TF import."""
    from training.data.schema import load_dataset

    assert params is not None
    data = load_dataset(params["data_dir"])
    frame = data.interactions
    return (
        f"{len(frame)} interactions, {frame['user_id'].nunique()} users, "
        f"{frame['item_id'].nunique()} items"
    )


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
    """Gate the trained model and publish it (``models/LATEST``): the MODEL event."""
    from artifacts.model_gate import ModelGateConfig, gate_and_promote

    assert params is not None
    config = ModelGateConfig(
        popularity_margin=params["gate_popularity_margin"],
        serving_tolerance=params["gate_serving_tolerance"],
        enforce=params["gate_enforce"],
    )
    promoted = gate_and_promote(model_uri, config)
    outlet_events[MODEL].extra = {MODEL_URI: promoted, DATA_DIR: params["data_dir"]}
    return promoted


# ---------------------------------------------------------------- recall_vectors
@task
def vectors_model(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> str:
    """The model whose user vectors to load."""
    assert params is not None
    return model_to_use(params, triggering_asset_events, MODEL)


@task(pool=_POOL, **_RETRY)
def load_user_vectors(
    model_uri: str, params: dict[str, Any] | None = None, outlet_events: Any = None
) -> str:
    from serving import tasks

    assert params is not None
    tasks.load_vectors(model_uri, params["redis_url"])
    # Recorded always, registered only where the task has USER_VECTORS as an outlet
    # (recall_vectors; Airflow drops extras of assets a task does not declare).
    outlet_events[USER_VECTORS].extra = {MODEL_URI: model_uri}
    return model_uri


@task(**_RETRY)
def seed_histories(
    params: dict[str, Any] | None = None, triggering_asset_events: Any = None
) -> int:
    """Replace the users' history lists with their latest items in the data the model was
    trained on: the triggering MODEL event's ``data_dir``, else the ``data_dir`` param."""
    from training import histories

    assert params is not None
    # The event's data_dir wins over the param (which always has a value: its default).
    data_dir = announced({}, triggering_asset_events, MODEL, DATA_DIR) or params["data_dir"]
    return histories.seed_histories(data_dir, params["redis_url"], params["history_max_items"])


# ---------------------------------------------------------------- recall_index
@task
def index_model(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> str:
    """The model to index (the USER_VECTORS event's, else the conf's or models/LATEST)."""
    assert params is not None
    return model_to_use(params, triggering_asset_events, USER_VECTORS)


@task(**_RETRY)
def check_user_vectors(model_uri: str, params: dict[str, Any] | None = None) -> str:
    """Refuse to index a model whose user vectors are not (completely) in Redis: a manual
    run (conf ``model_uri``, or models/LATEST) on a model ``recall_vectors`` never loaded
    would ship an index that serves every user the fallback. Redis unreachable: retried
    like the other Redis tasks."""
    from serving import tasks

    assert params is not None
    try:
        tasks.check_user_vectors(model_uri, params["redis_url"])
    except tasks.UserVectorsNotLoaded as exc:
        # Failed without retries: only a recall_vectors run changes the answer.
        raise AirflowFailException(str(exc)) from exc
    return model_uri


@task
def latest_model(params: dict[str, Any] | None = None) -> str:
    assert params is not None
    return _latest_model_uri(params["artifact_root"])


@task(**_RETRY)
def embed_fresh_items(model_uri: str, params: dict[str, Any] | None = None) -> str:
    """Embed the items added since training with this model: the build folds them in."""
    from training import fresh_items

    assert params is not None
    fresh_items.embed_fresh_items(model_uri, params["redis_url"])
    return model_uri


def _build(model_uri: str, params: dict[str, Any]) -> str:
    """Build, gate and publish the index of ``model_uri``; promoted only while the model is
    still ``models/LATEST`` (else skipped: no INDEX event, no ship, no rollback)."""
    from serving import tasks

    try:
        # With a fleet, LATEST moves only in `ship`, after a verified canary (watchers and
        # the fleet then never disagree about what is current).
        return tasks.build_index(
            model_uri,
            min_recall=params["min_recall"],
            fast_scan=params["index_fast_scan"],
            set_latest=not params["fleet"].strip(),
            require_latest_model=True,
            redis_url=params["redis_url"],
        )
    except tasks.StaleModel as exc:
        raise AirflowSkipException(str(exc)) from exc


@task(outlets=[INDEX], pool=_POOL)
def build_index(
    model_uri: str, params: dict[str, Any] | None = None, outlet_events: Any = None
) -> str:
    assert params is not None
    uri = _build(model_uri, params)
    outlet_events[INDEX].extra = {INDEX_URI: uri}
    return uri


@task.short_circuit
def index_outdated(params: dict[str, Any] | None = None) -> bool:
    from serving import tasks

    assert params is not None
    reason = tasks.rebuild_reason(
        params["artifact_root"],
        params["min_recall"],
        params["redis_url"],
        fast_scan=params["index_fast_scan"],
    )
    print(f"rebuild: {reason}" if reason else "rebuild: the LATEST index is current; skipped")
    return reason is not None


# ---------------------------------------------------------------- recall_ship
@task(pool=_POOL)
def ship(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> str:
    from serving.fleet import FleetSettings, ship_published

    assert params is not None
    index_uri = shipped_index_uri(params, triggering_asset_events)
    settings = FleetSettings(fleet=params["fleet"], fleet_canary=params["fleet_canary"])
    return ship_published(index_uri, settings)


@task(pool=_POOL, **_RETRY)
def prune_user_vectors(params: dict[str, Any] | None = None) -> list[str]:
    from serving import tasks

    assert params is not None
    return tasks.prune_vectors(params["artifact_root"], params["redis_url"], params["keep_indexes"])


@task(**_RETRY)
def refresh_touched_users(params: dict[str, Any] | None = None) -> int:
    from training import refresher

    assert params is not None
    return refresher.refresh_touched_users(params["artifact_root"], params["redis_url"])


# ---------------------------------------------------------------- the DAGs
@dag(
    dag_id="recall_train",
    schedule="@daily",
    params=TRAIN_PARAMS,
    **_EVERY_DAG,
)
def recall_train() -> None:
    validate_data() >> model_gate(train())


@dag(
    dag_id="recall_vectors",
    schedule=[MODEL],
    params=VECTORS_PARAMS,
    **_EVERY_DAG,
)
def recall_vectors() -> None:
    # The USER_VECTORS event (which schedules the index) waits for the histories too.
    seed_histories() >> load_user_vectors.override(outlets=[USER_VECTORS])(vectors_model())


@dag(
    dag_id="recall_index",
    schedule=[USER_VECTORS],
    params=INDEX_PARAMS,
    **_EVERY_DAG,
)
def recall_index() -> None:
    build_index(embed_fresh_items(check_user_vectors(index_model())))


@dag(
    dag_id="recall_rebuild_index",
    schedule="0 2 * * *",
    params=REBUILD_PARAMS,
    **_EVERY_DAG,
)
def recall_rebuild_index() -> None:
    check = index_outdated()
    model = latest_model()
    seeded = seed_histories()
    check >> [model, seeded]
    # The chain's build task under the rebuild's own task id (the runbook names it). No
    # check_user_vectors here: load_user_vectors, upstream of the build, loads them.
    build = build_index.override(task_id="rebuild_index")
    index = build(embed_fresh_items(load_user_vectors(model)))
    seeded >> index


@dag(
    dag_id="recall_ship",
    schedule=[INDEX],
    params=SHIP_PARAMS,
    **_EVERY_DAG,
)
def recall_ship() -> None:
    ship() >> prune_user_vectors()


@dag(
    dag_id="recall_refresh_vectors",
    schedule="@hourly",
    params=REFRESH_PARAMS,
    **_EVERY_DAG,
)
def recall_refresh_vectors() -> None:
    refresh_touched_users()


recall_train()
recall_vectors()
recall_index()
recall_rebuild_index()
recall_ship()
recall_refresh_vectors()
