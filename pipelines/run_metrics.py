"""Pipeline run outcomes as Prometheus metrics, in the node_exporter textfile format.

The DAGs' success and failure callbacks call :func:`record_run`, which rewrites one small
``*.prom`` file (atomically: temporary file + rename) holding, per DAG id::

    recall_pipeline_last_success_timestamp_seconds{dag="…"}  Unix seconds of the last success
    recall_pipeline_last_failure_timestamp_seconds{dag="…"}  … of the last failure
    recall_pipeline_runs_total{dag="…",outcome="success|failed"}

node_exporter's textfile collector (``--collector.textfile.directory``, pointed at the
file's directory) exports them; the ``RecallPipelineStale`` alert fires when the training
DAG has had no successful run for 36 hours, ``RecallPipelineFailed`` on any failed run.
The file is ``$RECALL_PIPELINE_METRICS_FILE``, default ``$RECALL_HOME/metrics/pipelines.prom``.
Standard library only: the DAG file imports this at parse time.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_HELP = {
    "recall_pipeline_last_success_timestamp_seconds": (
        "gauge",
        "Unix time of the DAG's last successful run.",
    ),
    "recall_pipeline_last_failure_timestamp_seconds": (
        "gauge",
        "Unix time of the DAG's last failed run.",
    ),
    "recall_pipeline_runs_total": ("counter", "Finished DAG runs by outcome."),
}
Key = tuple[str, tuple[tuple[str, str], ...]]
log = logging.getLogger(__name__)


def metrics_file() -> Path:
    """Where the run metrics are written (see the module docstring)."""
    explicit = os.environ.get("RECALL_PIPELINE_METRICS_FILE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("RECALL_HOME", "var")) / "metrics" / "pipelines.prom"


def read_samples(path: Path) -> dict[Key, float]:
    """The samples of a file this module wrote (unknown lines are ignored)."""
    samples: dict[Key, float] = {}
    if not path.exists():
        return samples
    for line in path.read_text().splitlines():
        match = _SAMPLE.match(line.strip())
        if match:
            labels = tuple(sorted(_LABEL.findall(match["labels"])))
            samples[(match["name"], labels)] = float(match["value"])
    return samples


def _render(samples: dict[Key, float]) -> str:
    lines: list[str] = []
    for name, (kind, text) in _HELP.items():
        rows = sorted((k, v) for k, v in samples.items() if k[0] == name)
        if not rows:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for (_, labels), value in rows:
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {value:.17g}")
    return "\n".join(lines) + "\n"


def record_run(
    dag_id: str, succeeded: bool, *, path: Path | None = None, now: float | None = None
) -> None:
    """Add one finished run of ``dag_id`` to the metrics file."""
    path = path or metrics_file()
    now = time.time() if now is None else now
    samples = read_samples(path)
    outcome = "success" if succeeded else "failed"
    stamp = "last_success" if succeeded else "last_failure"
    samples[(f"recall_pipeline_{stamp}_timestamp_seconds", (("dag", dag_id),))] = now
    counter = ("recall_pipeline_runs_total", (("dag", dag_id), ("outcome", outcome)))
    samples[counter] = samples.get(counter, 0.0) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pipelines-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(_render(samples))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def on_success(context: dict[str, Any]) -> None:
    """DAG ``on_success_callback``."""
    _record(context, True)


def on_failure(context: dict[str, Any]) -> None:
    """DAG ``on_failure_callback``."""
    _record(context, False)


def _record(context: dict[str, Any], succeeded: bool) -> None:
    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or str(context.get("dag_id", "unknown"))
    try:
        record_run(dag_id, succeeded)
    except OSError as exc:  # a metrics file must never fail the run it reports
        log.error("could not write pipeline metrics: %s", exc)
