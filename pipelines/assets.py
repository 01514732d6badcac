"""The Airflow assets of the recall pipeline: what each step publishes, and what schedules
the next step (docs/runbook.md, "The asset chain"). Each link of the chain is a DAG of its
own, scheduled on the previous link's asset::

    recall_train (@daily):   validate_data → train → model_gate ─► MODEL
                                                                   │
    recall_vectors (schedule=[MODEL]):  seed_histories, load_user_vectors ─► USER_VECTORS
                                                                   │
    recall_index (schedule=[USER_VECTORS]):  embed_fresh_items → build_index ─► INDEX ─┐
    recall_rebuild_index (nightly):  … → rebuild_index ─► INDEX ──────────────────────┤
                                                                                      ▼
    recall_ship (schedule=[INDEX]):  ship → prune_user_vectors

An event is emitted only when its task succeeds (a failed gate, a failed load or a skipped
rebuild emits nothing, so nothing downstream runs). Each event's ``extra`` carries what it
announces (``model_uri``, ``data_dir``, ``index_uri``): the consumer reads *which* model or
index to work on from its triggering event, never from a pointer that may have moved since
(``pipelines.asset_events.announced``). The rebuild DAG loads vectors too but emits no
``USER_VECTORS`` event (it would schedule a second build). The URIs below are names, not
locations (``recall://``): the artifact root is a DAG param, so one asset stands for "the
published model/index" of whichever store the run used.
"""

from __future__ import annotations

from airflow.sdk import Asset

MODEL = Asset(name="recall_model", uri="recall://artifacts/models")
"""A model passed the model gate and is ``models/LATEST``; extra: ``model_uri``,
``data_dir`` (the data it was trained on). Schedules ``recall_vectors``."""
USER_VECTORS = Asset(name="recall_user_vectors", uri="recall://redis/user-vectors")
"""A model's user vectors (and the users' histories) are in Redis; extra: ``model_uri``.
Schedules ``recall_index``."""
INDEX = Asset(name="recall_index", uri="recall://artifacts/indexes")
"""An index is built, gated and published (LATEST moved unless a fleet is configured);
extra: ``index_uri``. Schedules ``recall_ship``."""

# The extra keys, shared by the producers and the consumers (and the runner, which passes
# a consumer run its triggering event's extra as conf, the way the scheduler hands it
# over). Each is also a param of the consumer DAG, so a manual trigger can name it.
MODEL_URI = "model_uri"
DATA_DIR = "data_dir"
INDEX_URI = "index_uri"
