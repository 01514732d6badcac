"""The model gate: a newly trained model reaches ``models/LATEST`` (and so the index, the
user vectors and the fleet) only if its held-out metrics beat popularity and do not fall
behind the serving model's.

Training writes ``metrics.json`` into the model artifact (docs/artifacts.md): ``recall@10``,
``ndcg@10``, ``recall@100`` on each user's last interaction, and the popularity baseline on
the same interactions (``popularity_recall@10``, ``popularity_recall@100``). The serving
model is the one the store's LATEST index was built from. Checks, per metric of
``ModelGateConfig.metrics``:

- popularity (metrics with a ``popularity_`` counterpart): value ≥ popularity × (1 + margin);
- serving model (when an index is published and its model is another one):
  value ≥ serving × (1 − tolerance).

A TF-free module that reads JSON only, so the DAG task, the CLI and both sides may use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from artifacts.errors import ArtifactError, ArtifactNotFound, InvalidArtifact
from artifacts.lineage import index_lineage
from artifacts.store import ArtifactStore, split_uri
from recall_settings import defaults

log = logging.getLogger(__name__)

MODEL_KIND = "models"
METRICS_NAME = "metrics.json"
# Defaults (DAG params gate_popularity_margin / gate_serving_tolerance, `recall model gate`).
# A model must at least match popularity on recall@k; beating it is what a model is for,
# but on small catalogs a trained model's lead can be a few per cent, so the default
# margin is 0 and stricter deployments raise it.
DEFAULT_POPULARITY_MARGIN = defaults.GATE_POPULARITY_MARGIN.default
# Held-out metrics of two trainings differ without any real change: another data window
# (other users' last interactions), and TensorFlow's nondeterministic training, which
# moves recall@10 on ML-100K's 943 test users by a few per cent between identical runs.
# 10 % relative is beyond that noise; deployments with more users can tighten it.
DEFAULT_SERVING_TOLERANCE = defaults.GATE_SERVING_TOLERANCE.default
DEFAULT_GATE_METRICS = ("recall@10", "ndcg@10", "recall@100")


class ModelGateFailed(ArtifactError):
    """A model's held-out metrics did not pass the gate; it was not promoted."""


class ModelGateConfig(BaseModel):
    """Margins of the model gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    popularity_margin: float = Field(
        default=DEFAULT_POPULARITY_MARGIN,
        ge=0.0,
        description="Relative lead required over popularity: value ≥ popularity × (1 + margin).",
    )
    serving_tolerance: float = Field(
        default=DEFAULT_SERVING_TOLERANCE,
        ge=0.0,
        le=1.0,
        description="Relative drop allowed vs the serving model: value ≥ serving × (1 − tol).",
    )
    metrics: tuple[str, ...] = Field(
        default=DEFAULT_GATE_METRICS,
        min_length=1,
        description="metrics.json keys that are checked.",
    )
    enforce: bool = Field(
        default=True,
        description="False: a failed gate is logged as a warning and the model is promoted "
        "anyway (smoke runs on tiny synthetic data, where popularity can win).",
    )


@dataclass(frozen=True)
class GateCheck:
    """One comparison: ``metric`` of the candidate (``value``) against ``baseline``."""

    metric: str
    baseline: str  # "popularity" or "serving model <version>"
    value: float
    baseline_value: float
    required: float

    @property
    def passed(self) -> bool:
        # A value exactly at the bound passes (0.2 × 0.9 is 0.18000000000000002 in floats).
        return self.value >= self.required - 1e-9

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (
            f"{verdict}: {self.metric} {self.value:.4f} vs {self.baseline} "
            f"{self.baseline_value:.4f} (required ≥ {self.required:.4f})"
        )


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on ``model_version``; ``problems`` are failures with no check
    (a metric missing from the candidate's metrics.json)."""

    model_version: str
    serving_model_version: str | None
    checks: tuple[GateCheck, ...]
    problems: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.checks)

    def reason(self) -> str:
        """One line naming every failed check (empty when the gate passed)."""
        failed = [*self.problems, *(c.describe() for c in self.checks if not c.passed)]
        return "; ".join(failed)

    def summary(self) -> str:
        against = self.serving_model_version or "none (no index published)"
        lines = [f"model {self.model_version}: serving model {against}"]
        lines += [f"  {c.describe()}" for c in self.checks]
        lines += [f"  FAIL: {p}" for p in self.problems]
        lines.append(f"  gate {'passed' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def compare_metrics(
    candidate: dict[str, float],
    serving: dict[str, float] | None,
    config: ModelGateConfig,
    serving_label: str = "serving model",
) -> tuple[list[GateCheck], list[str]]:
    """The gate's checks on plain metric dicts (``metrics.json`` contents): the checks, and
    the problems that allow no check (a gated metric missing from ``candidate``).

    A metric the serving model lacks (an older artifact) is not compared with it.
    """
    checks: list[GateCheck] = []
    problems: list[str] = []
    for metric in config.metrics:
        value = candidate.get(metric)
        if value is None or not math.isfinite(value):
            problems.append(f"{metric} missing from the candidate's {METRICS_NAME}")
            continue
        popularity = candidate.get(f"popularity_{metric}")
        if popularity is not None:
            required = popularity * (1 + config.popularity_margin)
            checks.append(GateCheck(metric, "popularity", value, popularity, required))
        old = (serving or {}).get(metric)
        if old is not None and math.isfinite(old):
            required = old * (1 - config.serving_tolerance)
            checks.append(GateCheck(metric, serving_label, value, old, required))
    return checks, problems


def read_metrics(store: ArtifactStore, model_version: str) -> dict[str, float]:
    """A model artifact's ``metrics.json`` (numbers only).

    Raises:
        ArtifactNotFound: no such model.
        InvalidArtifact: the file is missing or not a JSON object.
    """
    path = store.local_dir(MODEL_KIND, model_version) / METRICS_NAME
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArtifact(f"{path}: not a readable metrics file ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidArtifact(f"{path}: expected a JSON object of metrics")
    return {k: float(v) for k, v in raw.items() if isinstance(v, int | float)}


def serving_model_version(store: ArtifactStore) -> str | None:
    """The model of the store's LATEST index (None when no index is published)."""
    with contextlib.suppress(ArtifactNotFound):
        return index_lineage(store).model_version
    return None


def evaluate_model(
    store: ArtifactStore, model_version: str, config: ModelGateConfig | None = None
) -> GateResult:
    """Gate ``model_version`` of ``store`` against popularity and the serving model."""
    config = config or ModelGateConfig()
    candidate = read_metrics(store, model_version)
    serving_version = serving_model_version(store)
    serving: dict[str, float] | None = None
    if serving_version and serving_version != model_version:
        serving = read_metrics(store, serving_version)
    checks, problems = compare_metrics(
        candidate, serving, config, f"serving model {serving_version}"
    )
    return GateResult(model_version, serving_version, tuple(checks), tuple(problems))


def gate_and_promote(model_uri: str, config: ModelGateConfig | None = None) -> str:
    """Gate the published (not yet promoted) model at ``model_uri``; if it passes, move
    ``models/LATEST`` to it. Returns ``model_uri``.

    Raises:
        ModelGateFailed: the gate failed (and ``config.enforce``); ``models/LATEST`` is
            unchanged and the message names every failed check.
    """
    root, kind, version = split_uri(model_uri)
    if kind != MODEL_KIND:
        raise InvalidArtifact(f"{model_uri} is not a model artifact URI")
    store = ArtifactStore(root)
    result = evaluate_model(store, version, config)
    for line in result.summary().splitlines():
        log.info("model gate: %s", line)
    if not result.passed:
        if (config or ModelGateConfig()).enforce:
            raise ModelGateFailed(
                f"model {version} failed the model gate, not promoted: {result.reason()}"
            )
        log.warning("model gate not enforced; promoting despite: %s", result.reason())
    store.set_latest(MODEL_KIND, version)
    log.info("model gate passed: models/LATEST → %s", version)
    return model_uri
