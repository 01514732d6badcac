"""Every shared default, declared once (the way Ray Serve's ``constants.py`` does it).

A :class:`Setting` is a name (the server field, DAG param and CLI option are all called
this), its environment variable (``RECALL_`` + the name in upper case), a typed default,
optional bounds or choices, and a description. :meth:`Setting.value` reads the environment
variable with the same type and bounds, so a bad value is refused with its variable named
instead of surfacing later as a traceback.

Defaults that depend on where the CLI keeps local state (``$RECALL_HOME``, default
``var``) are functions of the environment: :func:`recall_home`, :func:`default_data_dir`,
:func:`default_artifact_root`, :func:`default_redis_url`; their settings' ``default``
is what they give with no environment set, and ``default_text`` how the docs spell it.

Standard library only: the Airflow DAG file imports this at parse time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T", str, int, float, bool)
ENV_PREFIX = "RECALL_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingError(ValueError):
    """A ``RECALL_*`` environment variable (or a value given for a setting) is invalid;
    the message names the variable and says what is allowed."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One shared setting. ``kind`` is its Python type (str, int, float or bool);
    ``minimum``/``maximum`` are inclusive bounds of numbers; ``choices`` the allowed
    strings; ``derive`` (optional) computes the default from the environment (for defaults
    under ``$RECALL_HOME``), ``default`` is then its value with no environment set."""

    name: str
    kind: type[T]
    default: T
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    derive: Callable[[Mapping[str, str]], T] | None = field(default=None, compare=False)
    default_text: str | None = None  # how docs spell a derived default

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``RECALL_MIN_RECALL``."""
        return ENV_PREFIX + self.name.upper()

    def default_in(self, environ: Mapping[str, str] | None = None) -> T:
        """The default without this setting's own variable (derived ones read others)."""
        environ = os.environ if environ is None else environ
        return self.derive(environ) if self.derive is not None else self.default

    def value(self, environ: Mapping[str, str] | None = None) -> T:
        """``$RECALL_<NAME>`` parsed and checked, else :meth:`default_in`.

        Raises:
            SettingError: the variable is not a valid value of this setting.
        """
        environ = os.environ if environ is None else environ
        raw = environ.get(self.env)
        if raw is None or (raw == "" and self.kind is not str):
            return self.default_in(environ)
        return self.check(self.parse(raw), source=self.env)

    def parse(self, raw: str) -> T:
        """``raw`` (an environment string) as this setting's type."""
        try:
            if self.kind is bool:
                lowered = raw.strip().lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(raw)
                return self.kind(lowered in _TRUE)
            return self.kind(raw.strip() if self.kind is not str else raw)
        except ValueError:
            raise SettingError(f"{self.env}={raw!r}: not {_KIND_TEXT[self.kind]}") from None

    def check(self, value: T, *, source: str | None = None) -> T:
        """``value`` if it is within the bounds and choices, else :class:`SettingError`."""
        where = source or self.name
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise SettingError(f"{where}={value}: must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise SettingError(f"{where}={value}: must be at most {self.maximum:g}")
        if self.choices is not None and value not in self.choices:
            raise SettingError(f"{where}={value!r}: must be one of {', '.join(self.choices)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this setting's values (what an Airflow ``Param`` validates)."""
        schema: dict[str, Any] = {"type": _JSON_TYPE[self.kind]}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        return schema

    def documented_default(self) -> str:
        """The default as the settings table shows it."""
        if self.default_text is not None:
            return self.default_text
        if self.kind is bool:
            return "true" if self.default else "false"
        if self.kind is str and self.default == "":
            return '""'
        return str(self.default)


_KIND_TEXT: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}
_JSON_TYPE: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


# ------------------------------------------------------------------ where local state lives
def recall_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$RECALL_HOME`` (default ``var``), resolved: where the CLI keeps data, artifacts,
    the local Redis, Airflow's home and metrics."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("RECALL_HOME") or "var").resolve()


def _data_dir(environ: Mapping[str, str]) -> str:
    return str(recall_home(environ) / "data" / "ml-100k")


def _artifact_root(environ: Mapping[str, str]) -> str:
    return str(recall_home(environ) / "artifacts")


def _redis_url(environ: Mapping[str, str]) -> str:
    return f"redis://127.0.0.1:{REDIS_PORT.value(environ)}/0"


HOME: Setting[str] = Setting(
    "home", str, "var", "Where the CLI keeps local state (data, artifacts, Redis, Airflow)."
)
DATA_DIR: Setting[str] = Setting(
    "data_dir",
    str,
    _data_dir({}),
    "Data directory the pipeline trains on (interactions, items, users).",
    derive=_data_dir,
    default_text="$RECALL_HOME/data/ml-100k",
)
ARTIFACT_ROOT: Setting[str] = Setting(
    "artifact_root",
    str,
    _artifact_root({}),
    "Artifact store root (a path or an fsspec URL such as s3://bucket/recall).",
    derive=_artifact_root,
    default_text="$RECALL_HOME/artifacts",
)
REDIS_PORT: Setting[int] = Setting(
    "redis_port",
    int,
    6390,
    "Port of the project-local Redis (`recall redis start`); the default Redis URL's port.",
    minimum=1,
    maximum=65535,
)
REDIS_URL: Setting[str] = Setting(
    "redis_url",
    str,
    "redis://127.0.0.1:6390/0",
    "Where user vectors and histories live; redis+cluster://host:port for a Redis Cluster.",
    derive=_redis_url,
    default_text="redis://127.0.0.1:$RECALL_REDIS_PORT/0",
)
HOST: Setting[str] = Setting(
    "host", str, "127.0.0.1", "Interface the server binds; the host CLI clients dial."
)
PORT: Setting[int] = Setting(
    "port",
    int,
    50051,
    "RecallService + health + reflection port (0: any free port).",
    minimum=0,
    maximum=65535,
)
ADMIN_PORT: Setting[int] = Setting(
    "admin_port", int, 50052, "RecallAdmin port (0: any free port).", minimum=0, maximum=65535
)
METRICS_PORT: Setting[int] = Setting(
    "metrics_port",
    int,
    9102,
    "Prometheus /metrics HTTP port of the server; 0 disables.",
    minimum=0,
    maximum=65535,
)
EPOCHS: Setting[int] = Setting(
    "epochs",
    int,
    30,
    "Most training epochs (early stopping on the validation split may stop sooner).",
    minimum=1,
    maximum=1000,
)
TRAIN_CONFIG: Setting[str] = Setting(
    "train_config",
    str,
    "",
    "YAML file of training settings and the feature spec; empty: the defaults.",
)
MIN_RECALL: Setting[float] = Setting(
    "min_recall",
    float,
    0.95,
    "Index quality gate: minimum ANN recall@10 and @100 against exact search.",
    minimum=0.0,
    maximum=1.0,
)
INDEX_FAST_SCAN: Setting[bool] = Setting(
    "index_fast_scan",
    bool,
    False,
    "Build the index with 4-bit fast-scan PQ codes (IVF...,PQ{m}x4fs; CPU builds only): "
    "the same bytes per item and a ~3x cheaper search at equal recall after re-rank at "
    "1M x 64 (bench/README.md).",
)
GATE_POPULARITY_MARGIN: Setting[float] = Setting(
    "gate_popularity_margin",
    float,
    0.0,
    "Model gate: relative lead required over popularity (value ≥ popularity × (1 + m)).",
    minimum=0.0,
)
GATE_SERVING_TOLERANCE: Setting[float] = Setting(
    "gate_serving_tolerance",
    float,
    0.10,
    "Model gate: relative drop allowed vs the serving model (value ≥ serving × (1 − t)).",
    minimum=0.0,
    maximum=1.0,
)
GATE_ENFORCE: Setting[bool] = Setting(
    "gate_enforce",
    bool,
    True,
    "false: a failed model gate only warns (smoke runs on tiny synthetic data).",
)
KEEP_INDEXES: Setting[int] = Setting(
    "keep_indexes",
    int,
    3,
    "User vectors are kept for the models of this many newest indexes (and LATEST's).",
    minimum=1,
)
HISTORY_MAX_ITEMS: Setting[int] = Setting(
    "history_max_items",
    int,
    1000,
    "Cap of each user's history list in Redis (recall:hist:<user_id>).",
    minimum=1,
)
FLEET: Setting[str] = Setting(
    "fleet",
    str,
    "",
    "Comma-separated RecallAdmin addresses to ship to; empty: servers pull indexes/LATEST.",
)
FLEET_CANARY: Setting[str] = Setting(
    "fleet_canary", str, "1", "The canary: a count (the first N members) or member addresses."
)
TASK_RETRIES: Setting[int] = Setting(
    "task_retries",
    int,
    2,
    "Retries (exponential backoff) of the DAGs' idempotent Redis tasks.",
    minimum=0,
    maximum=10,
)
PIPELINE_POOL: Setting[str] = Setting(
    "pipeline_pool",
    str,
    "recall_store",
    "Airflow pool (1 slot) of the tasks that write the artifact store, Redis or the fleet.",
)

SETTINGS: tuple[Setting[Any], ...] = (
    HOME,
    DATA_DIR,
    ARTIFACT_ROOT,
    REDIS_PORT,
    REDIS_URL,
    HOST,
    PORT,
    ADMIN_PORT,
    METRICS_PORT,
    EPOCHS,
    TRAIN_CONFIG,
    MIN_RECALL,
    INDEX_FAST_SCAN,
    GATE_POPULARITY_MARGIN,
    GATE_SERVING_TOLERANCE,
    GATE_ENFORCE,
    KEEP_INDEXES,
    HISTORY_MAX_ITEMS,
    FLEET,
    FLEET_CANARY,
    TASK_RETRIES,
    PIPELINE_POOL,
)
"""Every shared setting, in the order the docs table lists them."""

BY_NAME: dict[str, Setting[Any]] = {s.name: s for s in SETTINGS}


def default_data_dir() -> str:
    """``$RECALL_DATA_DIR``, else ``$RECALL_HOME/data/ml-100k``."""
    return DATA_DIR.value()


def default_artifact_root() -> str:
    """``$RECALL_ARTIFACT_ROOT``, else ``$RECALL_HOME/artifacts``."""
    return ARTIFACT_ROOT.value()


def default_redis_url() -> str:
    """``$RECALL_REDIS_URL``, else the project-local Redis on ``$RECALL_REDIS_PORT``."""
    return REDIS_URL.value()


def markdown_table() -> str:
    """The settings table of docs/runbook.md (a test keeps the two equal)."""
    rows = ["| Setting | Environment variable | Default | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        bounds = []
        if s.minimum is not None:
            bounds.append(f"≥ {s.minimum:g}")
        if s.maximum is not None:
            bounds.append(f"≤ {s.maximum:g}")
        extra = f" ({', '.join(bounds)})" if bounds else ""
        rows.append(
            f"| `{s.name}` | `{s.env}` | `{s.documented_default()}` | {s.description}{extra} |"
        )
    return "\n".join(rows)
