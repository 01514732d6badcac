"""Recall DAGs.

- ``recall_train_and_index`` (daily): train the towers (the model is published but
  ``models/LATEST`` does not move) → the model gate (held-out metrics vs popularity and
  vs the serving model; a failure fails the run and nothing else is published, a pass
  moves ``models/LATEST``) → load the new user vectors into Redis → build, gate and
  publish the IVF-PQ index → ship it to the fleet → delete user vectors that no recent
  index needs. Vectors load *before* the index is published, so a server that hot-swaps
  to the new index finds its model's vectors.
- ``ship`` (``serving.fleet.ship_published``): with a fleet configured (``fleet``, env
  ``RECALL_FLEET``) the index is published *without* moving ``indexes/LATEST``, and this
  task loads it on the canary, verifies it, promotes LATEST, then loads and verifies the
  rest; any failure reverts the fleet and fails the run. No fleet: a no-op that says so
  (servers poll LATEST). While ``indexes/PIN`` is set: published, not shipped (logged).
- ``recall_rebuild_index`` (nightly): only when the LATEST index is not what a rebuild
  would produce (``serving.tasks.rebuild_reason``: no index, built from another model than
  ``models/LATEST``, index configuration, gate minimum or Faiss changed; otherwise every
  task is skipped), rebuild the index from the LATEST model (vectors are re-loaded first,
  idempotently), ship it, then the same clean-up. Its index is promoted only if its model
  is still ``models/LATEST`` when the build ends (``StaleModel`` otherwise: a training run
  that promoted a newer model meanwhile is never rolled back).
- Hygiene: one active run per DAG; the Redis tasks (vectors, histories, pruning, refresh)
  are idempotent and retry twice with exponential backoff; every run's outcome goes to
  ``pipelines.run_metrics`` (a textfile metric behind the ``RecallPipelineStale`` and
  ``RecallPipelineFailed`` alerts).
- Both seed the users' history lists (``recall:hist:<user_id>``) from the data directory
  before the index is published, so the seen filter and the refresher start from the data.
- ``recall_refresh_vectors`` (hourly): re-encode every user touched by RecordInteractions
  since its previous run, with the serving model's user tower (covers anything the
  ``recall refresher`` worker missed).

Params (set per run with ``conf``; defaults from ``RECALL_*`` env at parse time):
``data_dir``, ``artifact_root``, ``redis_url``, ``epochs`` (most epochs; early stopping on
the validation split picks fewer), ``train_config`` (YAML file of training settings and
the feature spec; empty = defaults), ``min_recall``,
``gate_popularity_margin`` and ``gate_serving_tolerance`` (the model gate's margins,
``artifacts.model_gate``), ``gate_enforce`` (false: a failed model gate only warns),
``keep_indexes`` (user vectors are kept for the models of this many newest indexes),
``history_max_items`` (cap of each seeded history list), ``fleet`` and ``fleet_canary``
(``serving.fleet.FleetSettings``: admin addresses, canary count or names).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines import run_metrics

# Idempotent tasks (Redis writes that converge) retry with backoff: a Redis restart or a
# failover during the nightly run costs a retry, not the run.
_RETRY: dict[str, Any] = {
    "retries": int(os.environ.get("RECALL_TASK_RETRIES", "2")),
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}
_CALLBACKS: dict[str, Any] = {
    "on_success_callback": run_metrics.on_success,
    "on_failure_callback": run_metrics.on_failure,
}

_DEFAULTS: dict[str, Any] = {
    "data_dir": Param(os.environ.get("RECALL_DATA_DIR", "var/data/ml-100k"), type="string"),
    "artifact_root": Param(os.environ.get("RECALL_ARTIFACT_ROOT", "var/artifacts"), type="string"),
    "redis_url": Param(
        os.environ.get("RECALL_REDIS_URL", "redis://127.0.0.1:6390/0"), type="string"
    ),
    "epochs": Param(int(os.environ.get("RECALL_EPOCHS", "30")), type="integer", minimum=1),
    "train_config": Param(os.environ.get("RECALL_TRAIN_CONFIG", ""), type="string"),
    # The index gate's minimum ANN recall (serving.index.params.DEFAULT_MIN_RECALL; a
    # literal here keeps the DAG file cheap to parse).
    "min_recall": Param(float(os.environ.get("RECALL_MIN_RECALL", "0.95")), type="number"),
    # The model gate's margins (artifacts.model_gate.DEFAULT_POPULARITY_MARGIN and
    # DEFAULT_SERVING_TOLERANCE; literals for the same reason as min_recall).
    "gate_popularity_margin": Param(
        float(os.environ.get("RECALL_GATE_POPULARITY_MARGIN", "0.0")), type="number", minimum=0
    ),
    "gate_serving_tolerance": Param(
        float(os.environ.get("RECALL_GATE_SERVING_TOLERANCE", "0.10")),
        type="number",
        minimum=0,
        maximum=1,
    ),
    # False: a failed model gate only warns (smoke runs on tiny synthetic data).
    "gate_enforce": Param(
        os.environ.get("RECALL_GATE_ENFORCE", "true").lower() != "false", type="boolean"
    ),
    "keep_indexes": Param(
        int(os.environ.get("RECALL_KEEP_INDEXES", "3")), type="integer", minimum=1
    ),
    "history_max_items": Param(
        int(os.environ.get("RECALL_HISTORY_MAX_ITEMS", "1000")), type="integer", minimum=1
    ),
    # serving.fleet.FleetSettings; the ship task's other settings come from RECALL_FLEET_*.
    "fleet": Param(os.environ.get("RECALL_FLEET", ""), type="string"),
    "fleet_canary": Param(os.environ.get("RECALL_FLEET_CANARY", "1"), type="string"),
}
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


@task
def model_gate(model_uri: str, params: dict[str, Any] | None = None) -> str:
    from artifacts.model_gate import ModelGateConfig, gate_and_promote

    assert params is not None
    config = ModelGateConfig(
        popularity_margin=params["gate_popularity_margin"],
        serving_tolerance=params["gate_serving_tolerance"],
        enforce=params["gate_enforce"],
    )
    return gate_and_promote(model_uri, config)


@task
def latest_model(params: dict[str, Any] | None = None) -> str:
    from artifacts.store import ArtifactStore

    assert params is not None
    store = ArtifactStore(params["artifact_root"])
    return store.uri("models", store.latest("models"))


@task(**_RETRY)
def load_user_vectors(model_uri: str, params: dict[str, Any] | None = None) -> str:
    from serving import tasks

    assert params is not None
    tasks.load_vectors(model_uri, params["redis_url"])
    return model_uri


@task
def build_index(model_uri: str, params: dict[str, Any] | None = None) -> str:
    from serving import tasks

    assert params is not None
    # With a fleet, LATEST moves only in `ship`, after a verified canary (watchers and the
    # fleet then never disagree about what is current).
    return tasks.build_index(
        model_uri,
        min_recall=params["min_recall"],
        set_latest=not params["fleet"].strip(),
        redis_url=params["redis_url"],
    )


@task
def rebuild_index(model_uri: str, params: dict[str, Any] | None = None) -> str:
    from serving import tasks

    assert params is not None
    try:
        return tasks.build_index(
            model_uri,
            min_recall=params["min_recall"],
            set_latest=not params["fleet"].strip(),
            require_latest_model=True,
            redis_url=params["redis_url"],
        )
    except tasks.StaleModel as exc:
        raise AirflowSkipException(str(exc)) from exc


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


@task
def ship(index_uri: str, params: dict[str, Any] | None = None) -> str:
    from serving.fleet import FleetSettings, ship_published

    assert params is not None
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


@task(**_RETRY)
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
    params=_DEFAULTS,
    tags=["recall"],
    **_CALLBACKS,
)
def recall_train_and_index() -> None:
    index = build_index(embed_fresh_items(load_user_vectors(model_gate(train()))))
    seed_histories() >> index
    ship(index) >> prune_user_vectors()


@dag(
    dag_id="recall_rebuild_index",
    schedule="0 2 * * *",
    start_date=_START,
    catchup=False,
    max_active_runs=1,
    params=_DEFAULTS,
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
    ship(index) >> prune_user_vectors()


@dag(
    dag_id="recall_refresh_vectors",
    schedule="@hourly",
    start_date=_START,
    catchup=False,
    max_active_runs=1,
    params=_DEFAULTS,  # uses artifact_root and redis_url; the rest so any run conf fits
    tags=["recall"],
    **_CALLBACKS,
)
def recall_refresh_vectors() -> None:
    refresh_touched_users()


recall_train_and_index()
recall_rebuild_index()
recall_refresh_vectors()
