"""Where the CLI keeps local state: everything under ``$RECALL_HOME`` (default ``./var``).

The defaults themselves live in ``recall_settings.defaults`` (shared with the DAGs and the
server); these are the CLI's names for them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from recall_settings import SettingError, defaults


def _value(setting: defaults.Setting[Any]) -> Any:
    """``setting``'s value from the environment; a bad ``RECALL_*`` variable ends the
    command with a one-line message (these run when the CLI builds its option defaults,
    before any command's own error handling)."""
    try:
        return setting.value()
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def home() -> Path:
    return defaults.recall_home()


def data_dir(name: str = "ml-100k") -> Path:
    if name == "ml-100k":
        return Path(_value(defaults.DATA_DIR))
    return home() / "data" / name


def cache_dir() -> Path:
    return home() / "cache"


def airflow_home() -> Path:
    return home() / "airflow"


def redis_dir() -> Path:
    return home() / "redis"


def redis_port() -> int:
    return int(_value(defaults.REDIS_PORT))


def default_redis_url() -> str:
    return str(_value(defaults.REDIS_URL))


def default_artifact_root() -> str:
    return str(_value(defaults.ARTIFACT_ROOT))
