"""Where the CLI keeps local state: everything under ``$RECALL_HOME`` (default ``./var``).

The defaults themselves live in ``recall_settings.defaults`` (shared with the DAGs and the
server); these are the CLI's names for them.
"""

from __future__ import annotations

from pathlib import Path

from recall_settings import defaults


def home() -> Path:
    return defaults.recall_home()


def data_dir(name: str = "ml-100k") -> Path:
    if name == "ml-100k":
        return Path(defaults.default_data_dir())
    return home() / "data" / name


def cache_dir() -> Path:
    return home() / "cache"


def airflow_home() -> Path:
    return home() / "airflow"


def redis_dir() -> Path:
    return home() / "redis"


def redis_port() -> int:
    return defaults.REDIS_PORT.value()


def default_redis_url() -> str:
    return defaults.default_redis_url()


def default_artifact_root() -> str:
    return defaults.default_artifact_root()
