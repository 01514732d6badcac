"""The Airflow assets of the recall pipeline: what each step publishes, and what schedules
the next step (docs/runbook.md, "The asset chain").

::

    recall_train_and_index:  train → model_gate ─► MODEL
                             → load_user_vectors ─► USER_VECTORS
                             → build_index ─► INDEX ───┐
    recall_rebuild_index:    … → rebuild_index ─► INDEX ┤
                                                       ▼
    recall_ship (schedule=[INDEX]):  ship → prune_user_vectors

An event is emitted only when its task succeeds (a skipped rebuild or a failed gate emits
nothing, so nothing downstream runs). Each event's ``extra`` carries the artifact URI it
announces (``model_uri``, ``index_uri``): the consumer reads *which* index to ship from its
triggering event, never from a pointer that may have moved since. The URIs below are names,
not locations (``recall://``): the artifact root is a DAG param, so one asset stands for
"the published model/index" of whichever store the run used.
"""

from __future__ import annotations

from airflow.sdk import Asset

MODEL = Asset(name="recall_model", uri="recall://artifacts/models")
"""A model passed the model gate and is ``models/LATEST``; extra: ``model_uri``."""
USER_VECTORS = Asset(name="recall_user_vectors", uri="recall://redis/user-vectors")
"""A model's user vectors are in Redis; extra: ``model_uri``."""
INDEX = Asset(name="recall_index", uri="recall://artifacts/indexes")
"""An index is built, gated and published (LATEST moved unless a fleet is configured);
extra: ``index_uri``. Schedules ``recall_ship``."""

# The extra keys, shared by the producers and the consumer (and the runner, which passes a
# consumer run its triggering event's extra as conf, the way the scheduler hands it over).
MODEL_URI = "model_uri"
INDEX_URI = "index_uri"
