"""`recall data|train|model|index|vectors|pipeline`: the stages that make data and
artifacts, each runnable by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from artifacts.model_gate import (
    DEFAULT_POPULARITY_MARGIN,
    DEFAULT_SERVING_TOLERANCE,
    ModelGateConfig,
)
from recall_cli import paths
from recall_cli.output import (
    ArtifactRoot,
    RedisUrl,
    console,
    err,
    friendly_errors,
    setting_option,
    stage,
)
from recall_settings import defaults
from serving.index.params import DEFAULT_MIN_RECALL

data_app = typer.Typer(
    help="Input data: fetch ML-100K, generate synthetic data.", no_args_is_help=True
)
index_app = typer.Typer(help="Faiss index artifacts.", no_args_is_help=True)
vectors_app = typer.Typer(help="User vectors in Redis.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Airflow pipelines.", no_args_is_help=True)
model_app = typer.Typer(help="Model artifacts.", no_args_is_help=True)


@data_app.command("fetch")
@friendly_errors
def data_fetch(
    out: Annotated[
        Path, typer.Option(help="Where to write the data directory.")
    ] = paths.data_dir(),
    force: bool = False,
) -> None:
    """Get ML-100K from the recbole wheel on PyPI (SHA-256 pinned) into OUT."""
    from training.data.ml100k import fetch_ml100k

    stage(f"fetching ML-100K into {out}")
    fetch_ml100k(out, paths.cache_dir(), force=force)
    console.print(f"  [green]ok[/] {out}")


@data_app.command("synth")
@friendly_errors
def data_synth(
    out: Path,
    users: int = 500,
    items: int = 800,
    per_user: int = 20,
    seed: int = 0,
) -> None:
    """Write a seeded synthetic data directory to OUT."""
    from training.data.schema import write_dataset
    from training.data.synthetic import generate

    data = generate(users, items, per_user, seed=seed)
    write_dataset(out, data.interactions, data.items, data.users)
    console.print(f"[green]ok[/] {len(data.interactions)} interactions → {out}")


# ---------------------------------------------------------------- stages
@friendly_errors
def train(
    data: Annotated[Path, typer.Option(help="Data directory.")] = paths.data_dir(),
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    config: Annotated[
        Path | None,
        typer.Option(help="YAML training config (TrainConfig fields, incl. the feature spec)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Most epochs (early stopping may stop sooner).")
    ] = None,
    model_gate: Annotated[
        bool,
        typer.Option(
            help="Promote (move models/LATEST) only if the model passes the model gate; "
            "--no-model-gate promotes it with a warning."
        ),
    ] = True,
) -> None:
    """Train the two towers on DATA, publish a model artifact, gate it and promote it.

    Epochs are chosen on each user's second-to-last interaction; the published model is
    then refitted on all interactions (see docs/quality.md). The model gate compares its
    held-out metrics with popularity's and the serving model's (`recall model gate`).
    """
    from rich.progress import Progress

    from training import tasks
    from training.config import read_train_config

    settings = read_train_config(config, {"epochs": epochs})
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("training", total=settings.epochs)

        def on_epoch(epoch: int, total: int, loss: float) -> None:
            progress.update(
                bar,
                completed=epoch,
                total=total,
                description=f"epoch {epoch}/{total} loss {loss:.3f}",
            )

        uri = tasks.train(data, artifact_root, settings.model_dump(), on_epoch, promote=False)
    console.print(f"[green]model[/] {uri}")
    model_show(model_version=Path(uri).name, artifact_root=artifact_root)
    _gate(artifact_root, Path(uri).name, ModelGateConfig(enforce=model_gate), promote=True)


def _gate(artifact_root: str, version: str, config: ModelGateConfig, promote: bool) -> None:
    """Print the model gate's checks; promote on a pass if asked; exit 1 on an enforced
    failure (models/LATEST unchanged)."""
    from artifacts.model_gate import evaluate_model, gate_and_promote
    from artifacts.store import ArtifactStore

    store = ArtifactStore(artifact_root)
    result = evaluate_model(store, version, config)
    against = result.serving_model_version or "none (no index published)"
    table = Table(title=f"model gate: {version} (serving model: {against})")
    for col in ("metric", "baseline", "value", "baseline value", "required", "result"):
        table.add_column(col)
    for c in result.checks:
        table.add_row(
            c.metric,
            c.baseline,
            f"{c.value:.4f}",
            f"{c.baseline_value:.4f}",
            f"≥ {c.required:.4f}",
            "[green]ok[/]" if c.passed else "[bold red]FAIL[/]",
        )
    console.print(table)
    for problem in result.problems:
        err.print(f"[bold red]FAIL:[/] {problem}")
    if not result.passed and config.enforce:
        err.print(
            f"[bold red]error:[/] model {version} failed the model gate"
            f"{'; models/LATEST unchanged' if promote else ''}: {result.reason()}"
        )
        raise typer.Exit(1)
    if not result.passed:
        err.print(f"[yellow]warning:[/] model gate not enforced: {result.reason()}")
    if promote:
        gate_and_promote(store.uri("models", version), config)
        console.print(f"[green]promoted[/] models/LATEST → {version}")
    else:
        console.print(f"[green]gate passed[/] for model {version}")


@model_app.command("show")
@friendly_errors
def model_show(
    model_version: Annotated[str | None, typer.Option(help="Default: LATEST.")] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
) -> None:
    """Show a model's held-out metrics (recall@k vs the popularity baseline)."""
    from artifacts.store import ArtifactStore

    store = ArtifactStore(artifact_root)
    version = store.resolve("models", model_version)
    metrics = json.loads((store.local_dir("models", version) / "metrics.json").read_text())
    table = Table(title=f"model {version}: leave-last-out evaluation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@model_app.command("gate")
@friendly_errors
def model_gate(
    version: Annotated[
        str | None, typer.Argument(help="Model version. Default: the newest published.")
    ] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    popularity_margin: Annotated[
        float, typer.Option(help="Required relative lead over popularity (recall@k).")
    ] = DEFAULT_POPULARITY_MARGIN,
    serving_tolerance: Annotated[
        float, typer.Option(help="Allowed relative drop vs the serving model's metrics.")
    ] = DEFAULT_SERVING_TOLERANCE,
    promote: Annotated[
        bool, typer.Option(help="On a pass, move models/LATEST to the model.")
    ] = False,
) -> None:
    """Compare a model's held-out metrics with popularity's and the serving model's (the
    model of the LATEST index). Exits 1 when the gate fails."""
    from artifacts.errors import ArtifactNotFound
    from artifacts.store import ArtifactStore

    store = ArtifactStore(artifact_root)
    if version is None:
        published = store.versions("models")
        if not published:
            raise ArtifactNotFound(f"no models published under {artifact_root}")
        version = published[-1]
    config = ModelGateConfig(
        popularity_margin=popularity_margin, serving_tolerance=serving_tolerance
    )
    _gate(artifact_root, version, config, promote)


@index_app.command("build")
@friendly_errors
def index_build(
    model_version: Annotated[str | None, typer.Option(help="Default: LATEST model.")] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    min_recall: Annotated[
        float, typer.Option(help="Quality gate: minimum ANN recall@10 and @100 vs exact.")
    ] = DEFAULT_MIN_RECALL,
    cpu: Annotated[bool, typer.Option(help="Build on CPU even if a GPU is present.")] = False,
    fast_scan: bool = setting_option(
        defaults.INDEX_FAST_SCAN,
        "4-bit fast-scan PQ codes (CPU build): same memory, ~3x cheaper search at 1M items.",
    ),
    redis_url: RedisUrl = paths.default_redis_url(),
    use_redis: Annotated[
        bool,
        typer.Option(
            "--redis/--no-redis",
            help="Check that the model's user vectors are loaded in Redis, and fold the "
            "catalogue changes (items added, takedowns) in, as the pipeline does; "
            "--no-redis builds from the model alone.",
        ),
    ] = True,
) -> None:
    """Build, gate and publish an IVF-PQ index for a model."""
    from artifacts.checksums import MANIFEST_NAME
    from artifacts.store import ArtifactStore
    from serving import tasks
    from serving.errors import BackendUnavailable
    from serving.index.artifact import INDEX_KIND, IndexManifest

    store = ArtifactStore(artifact_root)
    model_uri = store.uri("models", store.resolve("models", model_version))
    if use_redis:
        try:
            # An index of a model with no vectors in Redis would serve every user the
            # fallback once LATEST moves to it: refuse, as the pipeline's recall_index does.
            tasks.check_user_vectors(model_uri, redis_url)
        except (tasks.UserVectorsNotLoaded, BackendUnavailable) as exc:
            err.print(f"[bold red]error:[/] {exc}")
            err.print("(`recall vectors load` loads them; --no-redis builds without the check)")
            raise typer.Exit(1) from None
    stage(f"building index for {model_uri}")
    uri = tasks.build_index(
        model_uri,
        min_recall=min_recall,
        allow_gpu=not cpu,
        redis_url=redis_url if use_redis else None,
        fast_scan=fast_scan,
    )
    manifest = IndexManifest.model_validate_json(
        (store.local_dir(INDEX_KIND, Path(uri).name) / MANIFEST_NAME).read_text()
    )
    recalls = " ".join(f"recall@{q.k}={q.recall}" for q in manifest.quality_by_k)
    console.print(
        f"[green]index[/] {uri}\n  {manifest.factory} nprobe={manifest.nprobe} "
        f"refine_factor={manifest.refine_factor} items={manifest.item_count} "
        f"device={manifest.build_device} {recalls}"
    )


@index_app.command("list")
@friendly_errors
def index_list(artifact_root: ArtifactRoot = paths.default_artifact_root()) -> None:
    """List published index versions (LATEST marked)."""
    from artifacts.errors import ArtifactNotFound
    from artifacts.store import ArtifactStore

    store = ArtifactStore(artifact_root)
    try:
        latest = store.latest("indexes")
    except ArtifactNotFound:
        latest = ""
    for version in store.versions("indexes"):
        console.print(f"{version}{'  ← LATEST' if version == latest else ''}")


@vectors_app.command("load")
@friendly_errors
def vectors_load(
    model_version: Annotated[str | None, typer.Option(help="Default: LATEST model.")] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    redis_url: RedisUrl = paths.default_redis_url(),
) -> None:
    """Write a model's user vectors into Redis under its model version."""
    from rich.progress import Progress

    from artifacts.store import ArtifactStore
    from serving import tasks

    store = ArtifactStore(artifact_root)
    model_uri = store.uri("models", store.resolve("models", model_version))
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("loading user vectors", total=None)
        count = tasks.load_vectors(
            model_uri,
            redis_url,
            lambda done, total: progress.update(bar, completed=done, total=total),
        )
    console.print(f"[green]ok[/] {count} user vectors → {redis_url}")


@vectors_app.command("prune")
@friendly_errors
def vectors_prune(
    keep_indexes: int = setting_option(
        defaults.KEEP_INDEXES, "Keep vectors of the models of this many newest indexes."
    ),
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    redis_url: RedisUrl = paths.default_redis_url(),
) -> None:
    """Delete user vectors of models that no recent index (nor LATEST model) needs."""
    from serving import tasks

    deleted = tasks.prune_vectors(artifact_root, redis_url, keep_indexes)
    console.print(
        f"deleted the user vectors of {len(deleted)} model(s): {', '.join(deleted) or '-'}"
    )


@pipeline_app.command("run")
@friendly_errors
def pipeline_run(
    data: Annotated[
        Path, typer.Option(help="Data directory (any catalog in the data format).")
    ] = paths.data_dir(),
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    redis_url: RedisUrl = paths.default_redis_url(),
    epochs: int = setting_option(defaults.EPOCHS, "Most training epochs."),
    min_recall: float = setting_option(
        defaults.MIN_RECALL, "Quality gate: minimum ANN recall@10 and @100 vs exact."
    ),
    keep_indexes: int = setting_option(
        defaults.KEEP_INDEXES, "Keep Redis user vectors for the models of this many indexes."
    ),
    index_fast_scan: bool = setting_option(
        defaults.INDEX_FAST_SCAN,
        "Index with 4-bit fast-scan PQ codes (CPU build): ~3x cheaper search at 1M items.",
    ),
    dag_id: Annotated[
        str,
        typer.Option(
            help="recall_train (then the DAGs its asset events schedule: recall_vectors → "
            "recall_index → recall_ship), recall_rebuild_index, or a later link of the chain "
            "(recall_vectors/recall_index then work on models/LATEST)."
        ),
    ] = "recall_train",
    model_gate: Annotated[
        bool,
        typer.Option(
            envvar=defaults.GATE_ENFORCE.env,
            help="--no-model-gate: a failed model gate only warns (smoke runs).",
        ),
    ] = defaults.GATE_ENFORCE.default,
    popularity_margin: float = setting_option(
        defaults.GATE_POPULARITY_MARGIN, "Model gate: required relative lead over popularity."
    ),
    serving_tolerance: float = setting_option(
        defaults.GATE_SERVING_TOLERANCE, "Model gate: allowed relative drop vs the serving model."
    ),
) -> None:
    """Run a recall DAG through Airflow (dag.test() on a local SQLite metadata DB).

    recall_train: validate data → train → model gate; its model asset event then runs
    recall_vectors (histories + user vectors into Redis), whose event runs recall_index
    (build, gate, publish), whose event runs recall_ship (ship to the fleet → prune old
    vectors). A model that fails the gate fails the run and nothing is published. Every
    value is checked against each DAG's typed params before anything runs.
    """
    from pipelines.runner import run_dag
    from recall_cli.progress import spinner_line

    if not data.is_dir():
        raise OSError(f"data directory {data} does not exist (try `recall data fetch`)")
    conf = {
        "data_dir": str(data.resolve()),
        "artifact_root": artifact_root,
        "redis_url": redis_url,
        "epochs": epochs,
        "min_recall": min_recall,
        "index_fast_scan": index_fast_scan,
        "keep_indexes": keep_indexes,
        "gate_enforce": model_gate,
        "gate_popularity_margin": popularity_margin,
        "gate_serving_tolerance": serving_tolerance,
    }
    logs = paths.airflow_home() / "logs"
    stage(f"running Airflow DAG {dag_id} on {data} (Airflow log under {logs})")
    with spinner_line(console, "Airflow is starting the DAG run…") as show:
        run = run_dag(
            dag_id, conf, paths.airflow_home(), on_progress=lambda m: show(f"Airflow: {m}")
        )
    for part in run.chain():
        table = Table(title=f"{part.dag_id} run {part.run_id}: {part.state}")
        for col in ("task", "state", "seconds", "result"):
            table.add_column(col)
        for t in part.tasks:
            table.add_row(t.task_id, t.state, f"{t.seconds:.1f}", str(t.result or ""))
        console.print(table)
    if not run.succeeded:
        failed = next(part for part in run.chain() if part.state != "success")
        err.print(  # one line, however long (paths): scripts and tests grep it
            f"[bold red]error:[/] pipeline {failed.dag_id} {failed.state}: "
            f"{failed.failure or 'see the log'}",
            soft_wrap=True,
        )
        err.print(f"Airflow log: {run.log_path}")
        raise typer.Exit(1)
