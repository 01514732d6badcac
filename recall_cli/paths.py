"""Where the CLI keeps local state: everything under ``$RECALL_HOME`` (default ``./var``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("RECALL_HOME", "var")).resolve()


def data_dir(name: str = "ml-100k") -> Path:
    return home() / "data" / name


def cache_dir() -> Path:
    return home() / "cache"


def airflow_home() -> Path:
    return home() / "airflow"


def redis_dir() -> Path:
    return home() / "redis"


def redis_port() -> int:
    return int(os.environ.get("RECALL_REDIS_PORT", "6390"))


def default_redis_url() -> str:
    return os.environ.get("RECALL_REDIS_URL", f"redis://127.0.0.1:{redis_port()}/0")


def default_artifact_root() -> str:
    return os.environ.get("RECALL_ARTIFACT_ROOT", str(home() / "artifacts"))
