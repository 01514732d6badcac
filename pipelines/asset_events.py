"""Which artifact a consumer DAG run works on: the value a run was told (its ``conf``) or the
extra of the asset event that scheduled it (docs/runbook.md, "The asset chain").

A run scheduled by the scheduler gets its events as ``triggering_asset_events`` (a mapping
asset → events, oldest first; several when events queued up while the DAG was busy, since
``max_active_runs=1``); `recall pipeline run` (no scheduler) hands the event's extra over as
the run's ``conf`` instead, so a param of the same name wins. What a manual trigger without
either gets is the caller's choice (``models/LATEST`` for the model, an error for the ship).
Airflow-free and pure, so the rule is unit-tested without a DAG run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def announced(
    params: Mapping[str, Any], triggering_asset_events: Any, asset: object, key: str
) -> str | None:
    """The value of ``key`` a run should use: the ``key`` param when it is non-empty, else
    the ``key`` extra of the newest triggering event of ``asset`` that has one, else None.

    ``triggering_asset_events``: Airflow's context value (``None``/empty for a manual or
    runner-started run); indexing it by an asset the run was not triggered by raises
    KeyError, which means "no event" here.
    """
    if params.get(key):
        return str(params[key])
    try:
        events = list(triggering_asset_events[asset]) if triggering_asset_events else []
    except KeyError:  # triggered by other assets only
        events = []
    for event in reversed(events):
        value = (getattr(event, "extra", None) or {}).get(key)
        if value:
            return str(value)
    return None
