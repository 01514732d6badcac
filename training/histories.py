"""Seed the users' history lists in Redis from a data directory (TF-free).

Each user's most recent items (at most ``cap``, most recent first) replace that user's
``recall:hist:<user_id>`` list atomically (``keyspace.histories.REPLACE_HISTORY_LUA``: a
reader sees the old list or the new one; one key per script call, so it runs on a Redis
Cluster too, the pipelines split by node). Users that are not in the data keep their lists
(e.g. users known only from RecordInteractions). Interactions recorded after the data was
exported and before seeding are replaced by the data's view of that user: the next data
export contains them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from keyspace.connection import SyncRedis, make_client
from keyspace.histories import HISTORY_MAX_ITEMS, queue_history_replace
from training.data.schema import load_dataset

log = logging.getLogger(__name__)


def latest_histories(interactions: pd.DataFrame, cap: int) -> dict[str, list[str]]:
    """user_id → up to ``cap`` item ids, most recent first.

    Ordered by ``timestamp``; for equal timestamps a later row counts as more recent (the
    order RecordInteractions' LPUSH would give).
    """
    if cap < 1:
        raise ValueError(f"history cap must be at least 1, got {cap}")
    frame = interactions[["user_id", "item_id", "timestamp"]].assign(
        _row=np.arange(len(interactions))
    )
    frame = frame.sort_values(["timestamp", "_row"], kind="stable").groupby("user_id").tail(cap)
    return {
        str(user): [str(i) for i in reversed(group["item_id"].tolist())]
        for user, group in frame.groupby("user_id", sort=False)
    }


def write_histories(
    client: SyncRedis, histories: dict[str, list[str]], batch_size: int = 500
) -> int:
    """Replace each user's history list (one atomic script call per user, ``batch_size``
    users per non-transactional pipeline). Returns the number of users written."""
    users = list(histories)
    for start in range(0, len(users), batch_size):
        pipe = client.pipeline(transaction=False)
        for user in users[start : start + batch_size]:
            queue_history_replace(pipe, user, histories[user])
        pipe.execute()
    return len(users)


def seed_histories(data_dir: str | Path, redis_url: str, cap: int = HISTORY_MAX_ITEMS) -> int:
    """Load ``data_dir`` and replace every user's history list with its ``cap`` most recent
    items. Returns the number of users seeded.

    Raises:
        DataFormatError: the data directory breaks the format.
        redis.RedisError: Redis cannot be reached.
        RedisConnectionConfigError: the URL or the ``RECALL_REDIS_*`` settings are wrong.
    """
    histories = latest_histories(load_dataset(data_dir).interactions, cap)
    client = make_client(redis_url, socket_timeout=10)
    try:
        written = write_histories(client, histories)
    finally:
        client.close()
    log.info("seeded the histories of %d users (at most %d items each)", written, cap)
    return written
