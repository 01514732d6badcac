"""Run a recall DAG through Airflow itself (``DAG.test()``) on a local SQLite metadata DB.

This is what `recall pipeline run` does: Airflow parses ``pipelines/dags``, creates a DAG
run, schedules each task by its dependencies and runs it in-process, passing artifact URIs
between tasks by XCom. Airflow's own log goes to a file; the caller gets a summary.

``dag.test()`` runs no scheduler, so the runner plays its two parts the chain needs:

- the pool: :func:`ensure_pool` creates ``pipeline_pool`` (``recall_store``, one slot)
  idempotently before the run (a deployment runs ``airflow pools set`` once instead);
- asset scheduling: after a run, each DAG scheduled on an asset that the run emitted an
  event for (an outlet task succeeded; Airflow's ``asset_event`` and
  ``dag_schedule_asset_reference`` tables) is run next, with the run's ``conf`` (the keys
  that DAG declares) plus the event's ``extra`` (``model_uri``, ``index_uri``: the params
  of the same name tell the consumer which version to work on, as the triggering event
  would). Unlike the scheduler it runs them whether or not they are paused: a local run of
  ``recall_train`` is the whole chain, recall_train → recall_vectors → recall_index →
  recall_ship.

A ``conf`` that the DAG's typed params refuse raises :class:`PipelineError` naming the
param, before any task runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
ProgressCallback = Callable[[str], None]


class PipelineError(RuntimeError):
    """The DAG could not be run at all (parse error, unknown DAG id)."""


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    state: str
    seconds: float
    result: Any


@dataclass(frozen=True)
class PipelineRun:
    dag_id: str
    run_id: str
    state: str
    tasks: list[TaskOutcome]
    log_path: Path
    failure: str = ""  # last exception line in the Airflow log when the run failed
    # Runs of the DAGs this run's asset events scheduled (recall_vectors after a model,
    # recall_index after vectors, recall_ship after an index), in order; each may have its own.
    followed: tuple[PipelineRun, ...] = ()

    @property
    def succeeded(self) -> bool:
        """This run and every run it scheduled succeeded."""
        return self.state == "success" and all(f.succeeded for f in self.followed)

    def chain(self) -> list[PipelineRun]:
        """This run, then the runs it scheduled (depth first)."""
        return [self, *(run for f in self.followed for run in f.chain())]


def configure_airflow(airflow_home: Path) -> None:
    """Point Airflow at a project-local home + SQLite DB. Must run before airflow is imported."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError("configure_airflow() must run before airflow is imported")
    os.environ.update(env)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (fds 1 and 2) to ``path`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _started(ti: Any) -> float:
    return ti.start_date.timestamp() if ti.start_date else float("inf")


_PROGRESS_PATTERNS = (
    (re.compile(r"\[DAG TEST\] starting task_id=(\w+)"), "running task {0}"),
    (
        re.compile(r"(validate|final) epoch (\d+)/(\d+) loss ([\d.]+)"),
        "train ({0}): epoch {1}/{2}, loss {3}",
    ),
    (re.compile(r"index (\S+): recall@(\d+)=([\d.]+)"), "build_index: {0}, recall@{1} {2}"),
    (re.compile(r"(shipped index \S+ to \d+ servers)"), "ship: {0}"),
    (
        re.compile(r"not shipping index (\S+): (no fleet configured|indexes are pinned to \S+)"),
        "ship: not shipping {0} ({1})",
    ),
)


def progress_message(log_line: str) -> str | None:
    """A short progress line for the few log lines a person watching wants, else None."""
    for pattern, template in _PROGRESS_PATTERNS:
        match = pattern.search(log_line)
        if match:
            return template.format(*match.groups())
    return None


class _LogFollower(threading.Thread):
    """Reads a growing log file and reports progress_message() lines until stopped."""

    def __init__(self, path: Path, on_progress: ProgressCallback) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.on_progress = on_progress
        self.done = threading.Event()

    def run(self) -> None:
        with self.path.open("r", errors="replace") as log:
            while True:
                line = log.readline()
                if line:
                    message = progress_message(line)
                    if message:
                        self.on_progress(message)
                elif self.done.wait(0.2):
                    return


def run_dag(
    dag_id: str,
    conf: dict[str, Any],
    airflow_home: Path,
    on_progress: ProgressCallback | None = None,
) -> PipelineRun:
    """Migrate the metadata DB if needed, parse the DAGs, run ``dag_id`` once with ``conf``.

    ``on_progress`` (optional) receives short progress lines ("train: epoch 3/20, loss 6.4")
    from a thread that follows Airflow's log while the DAG runs.

    Raises:
        PipelineError: the DAG file does not parse or the DAG does not exist.
    """
    configure_airflow(airflow_home)
    logs = airflow_home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{dag_id}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log_path.touch()
    follower = _LogFollower(log_path, on_progress) if on_progress else None
    if follower:
        follower.start()
    try:
        return _run_logged(dag_id, conf, log_path)
    finally:
        if follower:
            follower.done.set()
            follower.join(5)


def check_conf(dag: Any, conf: dict[str, Any]) -> None:
    """Validate ``conf`` against the DAG's typed params exactly as Airflow does when a run
    is triggered (the serialized DAG's ``params.deep_merge(conf).validate()``).

    Raises:
        PipelineError: a value breaks its param's type, bounds or enum (message names it).
    """
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    try:
        serialized.params.deep_merge(conf).validate()
    except ParamValidationError as exc:
        raise PipelineError(f"{dag.dag_id}: {exc}") from None


def ensure_pool(name: str, slots: int = 1) -> None:
    """Create the Airflow pool ``name`` with ``slots`` if it is missing (idempotent: an
    existing pool keeps the slots an operator gave it)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    with create_session() as session:
        if Pool.get_pool(name, session=session) is None:
            Pool.create_or_update_pool(
                name,
                slots,
                "Recall pipeline tasks that write the artifact store, Redis vectors or the "
                "fleet: one at a time across DAGs (pipelines/dags/recall_pipelines.py).",
                include_deferred=False,
                session=session,
            )


def scheduled_by(dag_id: str, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The DAGs that the asset events of run ``run_id`` schedule, with the extra of the
    newest such event each (Airflow's own tables: ``asset_event`` and the DAGs'
    ``dag_schedule_asset_reference``), in the order the events happened."""
    from airflow.models.asset import AssetEvent, DagScheduleAssetReference
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.timestamp)
        ).all()
        for event in events:
            consumers = session.scalars(
                select(DagScheduleAssetReference.dag_id).where(
                    DagScheduleAssetReference.asset_id == event.asset_id
                )
            ).all()
            for consumer in consumers:
                found.setdefault(consumer, {}).update(dict(event.extra or {}))
    return list(found.items())


def _run_logged(dag_id: str, conf: dict[str, Any], log_path: Path) -> PipelineRun:
    with _output_to(log_path):
        from airflow import settings
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils import db

        from recall_settings import defaults

        if settings.Session is None:
            settings.configure_orm()
        db.initdb()
        ensure_pool(defaults.PIPELINE_POOL.value())
        bag = DagBag(dag_folder=str(DAGS_FOLDER))
        if bag.import_errors:
            raise PipelineError(f"DAG files failed to parse: {bag.import_errors} (log: {log_path})")
        return _run_chain(bag, dag_id, conf, log_path)


def _run_chain(bag: Any, dag_id: str, conf: dict[str, Any], log_path: Path) -> PipelineRun:
    """Run ``dag_id`` with the part of ``conf`` it declares, then the DAGs it scheduled."""
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise PipelineError(f"no DAG {dag_id!r} in {DAGS_FOLDER}; found {sorted(bag.dag_ids)}")
    own = {k: v for k, v in conf.items() if k in dag.params}
    check_conf(dag, own)
    dag_run = dag.test(run_conf=own)
    outcomes = []
    for ti in sorted(dag_run.get_task_instances(), key=_started):
        seconds = (
            (ti.end_date - ti.start_date).total_seconds() if ti.end_date and ti.start_date else 0.0
        )
        result = ti.xcom_pull(task_ids=ti.task_id) if str(ti.state) == "success" else None
        outcomes.append(TaskOutcome(ti.task_id, str(ti.state), seconds, result))
    state = str(dag_run.state)
    failure = ""
    if state != "success":
        sys.stdout.flush()  # the log is this process's fds 1 and 2 (_output_to)
        sys.stderr.flush()
        failure = last_exception_line(log_path.read_text(errors="replace"))
    followed = tuple(
        _run_chain(bag, target, {**conf, **extra}, log_path)
        for target, extra in scheduled_by(dag_id, dag_run.run_id)
    )
    return PipelineRun(dag_id, dag_run.run_id, state, outcomes, log_path, failure, followed)


_EXCEPTION_LINE = re.compile(
    r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Unavailable|NotFound|Mismatch)\b: .+$"
)


def last_exception_line(log_text: str) -> str:
    """The final ``SomeError: message`` line of a log (the task's root failure), or ""."""
    matches = [line for line in log_text.splitlines() if _EXCEPTION_LINE.match(line)]
    return matches[-1] if matches else ""
