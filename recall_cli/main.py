"""`recall`: fetch data, run the pipeline, train, build the index, load vectors, serve,
query, inspect. Every failure a user can cause ends with a one-line message and exit 1."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from recall_cli import paths

# TensorFlow's C++ start-up chatter is not for CLI users (tasks inherit this too).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(
    help="Input data: fetch ML-100K, generate synthetic data.", no_args_is_help=True
)
index_app = typer.Typer(help="Faiss index artifacts.", no_args_is_help=True)
vectors_app = typer.Typer(help="User vectors in Redis.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Airflow pipelines.", no_args_is_help=True)
redis_app = typer.Typer(help="The project-local Redis server.", no_args_is_help=True)
for sub, name in (
    (data_app, "data"),
    (index_app, "index"),
    (vectors_app, "vectors"),
    (pipeline_app, "pipeline"),
    (redis_app, "redis"),
):
    app.add_typer(sub, name=name)


def _own_stream(stream: TextIO) -> TextIO:
    """A private duplicate of ``stream``'s file descriptor.

    `recall pipeline run` points fds 1 and 2 at Airflow's log file while the DAG runs; the
    CLI's own progress and results must still reach the terminal.
    """
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", buffering=1, encoding="utf-8")
    except (OSError, ValueError, io.UnsupportedOperation):
        return stream


console = Console(file=_own_stream(sys.stdout))
err = Console(file=_own_stream(sys.stderr), stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn expected failures into `error: …` + exit 1 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from artifacts.errors import ArtifactError
        from pipelines.runner import PipelineError
        from recall_cli.local_redis import RedisNotInstalled
        from serving.errors import RecallError
        from training.data.ml100k import FetchError
        from training.data.schema import DataFormatError

        try:
            return fn(*args, **kwargs)
        except (
            ArtifactError,
            RecallError,
            DataFormatError,
            FetchError,
            RedisNotInstalled,
            PipelineError,
            ValidationError,
            OSError,
        ) as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from None
        except Exception as exc:
            import grpc

            if isinstance(exc, grpc.RpcError):
                err.print(f"[bold red]error:[/] {exc.code().name}: {exc.details()}")
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    err.print("is a recall server running there? (`make serve` starts one)")
                raise typer.Exit(1) from None
            raise

    return wrapper  # type: ignore[return-value]


def _stage(text: str) -> None:
    console.print(f"[bold cyan]▸[/] {text}")


ArtifactRoot = Annotated[str, typer.Option(help="Artifact store root (path or fsspec URL).")]
RedisUrl = Annotated[str, typer.Option(help="Redis holding user vectors.")]


# ---------------------------------------------------------------- data
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

    _stage(f"fetching ML-100K into {out}")
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
@app.command()
@friendly_errors
def train(
    data: Annotated[Path, typer.Option(help="Data directory.")] = paths.data_dir(),
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    epochs: int = 20,
    embedding_dim: int = 32,
) -> None:
    """Train the two towers on DATA and publish a model artifact."""
    from rich.progress import Progress

    from training import tasks

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("training", total=epochs)

        def on_epoch(epoch: int, total: int, loss: float) -> None:
            progress.update(
                bar, completed=epoch, description=f"epoch {epoch}/{total} loss {loss:.3f}"
            )

        uri = tasks.train(
            data, artifact_root, {"epochs": epochs, "embedding_dim": embedding_dim}, on_epoch
        )
    console.print(f"[green]model[/] {uri}")
    evaluate(model_version=Path(uri).name, artifact_root=artifact_root)


@app.command()
@friendly_errors
def evaluate(
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


@index_app.command("build")
@friendly_errors
def index_build(
    model_version: Annotated[str | None, typer.Option(help="Default: LATEST model.")] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    min_recall: Annotated[float, typer.Option(help="Quality gate: ANN recall@10 vs exact.")] = 0.8,
    cpu: Annotated[bool, typer.Option(help="Build on CPU even if a GPU is present.")] = False,
) -> None:
    """Build, gate and publish an IVF-PQ index for a model."""
    from artifacts.store import ArtifactStore
    from serving import tasks

    store = ArtifactStore(artifact_root)
    model_uri = store.uri("models", store.resolve("models", model_version))
    _stage(f"building index for {model_uri}")
    uri = tasks.build_index(model_uri, min_recall=min_recall, allow_gpu=not cpu)
    manifest = json.loads(
        (Path(store.local_dir("indexes", Path(uri).name)) / "manifest.json").read_text()
    )
    console.print(
        f"[green]index[/] {uri}\n  {manifest['factory']} nprobe={manifest['nprobe']} "
        f"items={manifest['item_count']} device={manifest['build_device']} "
        f"recall@{manifest['quality']['k']}={manifest['quality']['recall']}"
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
    keep_indexes: Annotated[
        int, typer.Option(help="Keep vectors of the models of this many newest indexes.")
    ] = 3,
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
    epochs: int = 20,
    min_recall: float = 0.8,
    dag_id: str = "recall_train_and_index",
) -> None:
    """Run the train → load vectors → build index DAG through Airflow (dag.test, SQLite)."""
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
    }
    logs = paths.airflow_home() / "logs"
    _stage(f"running Airflow DAG {dag_id} on {data} (Airflow log under {logs})")
    with spinner_line(console, "Airflow is starting the DAG run…") as show:
        run = run_dag(
            dag_id, conf, paths.airflow_home(), on_progress=lambda m: show(f"Airflow: {m}")
        )
    table = Table(title=f"{dag_id} run {run.run_id}: {run.state}")
    for col in ("task", "state", "seconds", "result"):
        table.add_column(col)
    for t in run.tasks:
        table.add_row(t.task_id, t.state, f"{t.seconds:.1f}", str(t.result or ""))
    console.print(table)
    if not run.succeeded:
        err.print(f"[bold red]error:[/] pipeline {run.state}: {run.failure or 'see the log'}")
        err.print(f"Airflow log: {run.log_path}")
        raise typer.Exit(1)


# ---------------------------------------------------------------- serving
@app.command()
@friendly_errors
def serve(
    port: Annotated[int | None, typer.Option(help="Default: $RECALL_PORT or 50051.")] = None,
    admin_port: Annotated[
        int | None, typer.Option(help="Default: $RECALL_ADMIN_PORT or 50052.")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Default: $RECALL_REDIS_URL.")] = None,
    artifact_root: Annotated[
        str | None, typer.Option(help="Default: $RECALL_ARTIFACT_ROOT or $RECALL_HOME/artifacts.")
    ] = None,
) -> None:
    """Run a recall server on the latest published index until Ctrl-C / SIGTERM.

    Every setting (serving/config.py) comes from RECALL_* env vars or the YAML file named by
    RECALL_CONFIG; options given here win over both.
    """
    from serving.config import load_settings
    from serving.server import run_forever

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(
        port=port, admin_port=admin_port, redis_url=redis_url, artifact_root=artifact_root
    )
    asyncio.run(run_forever(settings))


def _target(port: int) -> str:
    return f"{os.environ.get('RECALL_HOST', '127.0.0.1')}:{port}"


@app.command()
@friendly_errors
def query(
    user: Annotated[list[str], typer.Option("--user", "-u", help="User id (repeatable).")],
    k: Annotated[int, typer.Option("--k", "-k", help="Candidates per user.")] = 10,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Item id to exclude (repeatable).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Data directory, to show item titles.")] = None,
    port: Annotated[int, typer.Option(envvar="RECALL_PORT")] = 50051,
) -> None:
    """Ask a running recall server for candidates and print them."""
    from serving.api.recall.v1 import recall_pb2
    from serving.client import RecallClient

    titles: dict[str, str] = {}
    if data is not None:
        from training.data.schema import load_dataset

        titles = load_dataset(data).item_titles()
    client = RecallClient(_target(port))
    try:
        for user_id in user:
            reply = client.recall(user_id, k, exclude or [])
            source = recall_pb2.Source.Name(reply.source)
            table = Table(
                title=f"user {user_id}: {source}",
                caption=f"model {reply.model_version} · index {reply.index_version}",
                min_width=64,
            )
            table.add_column("#", justify="right")
            table.add_column("item")
            if titles:
                table.add_column("title")
            table.add_column("score", justify="right")
            for rank, c in enumerate(reply.candidates, 1):
                row = [str(rank), c.item_id] + ([titles.get(c.item_id, "?")] if titles else [])
                table.add_row(*row, f"{c.score:.4f}")
            console.print(table)
    finally:
        client.close()


@app.command()
@friendly_errors
def status(
    port: Annotated[int, typer.Option(envvar="RECALL_PORT")] = 50051,
    admin_port: Annotated[int, typer.Option(envvar="RECALL_ADMIN_PORT")] = 50052,
) -> None:
    """Show what a running server serves (RecallAdmin/GetStatus)."""
    from serving.client import RecallClient

    client = RecallClient(_target(port), _target(admin_port))
    try:
        s = client.status()
    finally:
        client.close()
    console.print_json(
        json.dumps(
            {
                "index_version": s.index_version,
                "model_version": s.model_version,
                "item_count": s.item_count,
                "factory": s.factory,
                "nprobe": s.nprobe,
                "loaded_at_unix": s.loaded_at_unix,
                "redis_healthy": s.redis_healthy,
                "redis_detail": s.redis_detail,
            }
        )
    )


@app.command("load-index")
@friendly_errors
def load_index(
    version: Annotated[str, typer.Argument(help="Index version; empty = LATEST.")] = "",
    port: Annotated[int, typer.Option(envvar="RECALL_PORT")] = 50051,
    admin_port: Annotated[int, typer.Option(envvar="RECALL_ADMIN_PORT")] = 50052,
) -> None:
    """Tell a running server to verify, load and swap to an index version (rollback too)."""
    from serving.client import RecallClient

    client = RecallClient(_target(port), _target(admin_port))
    try:
        reply = client.load_index(version)
    finally:
        client.close()
    console.print(
        f"[green]serving[/] index {reply.index_version} (model {reply.model_version}, "
        f"{reply.item_count} items); was {reply.previous_index_version or 'none'}"
    )


# ---------------------------------------------------------------- local redis
def _local_redis() -> Any:
    from recall_cli.local_redis import LocalRedis

    return LocalRedis(paths.redis_dir(), paths.redis_port())


@redis_app.command("start")
@friendly_errors
def redis_start() -> None:
    """Start the project-local Redis (127.0.0.1:$RECALL_REDIS_PORT, data in var/redis)."""
    local = _local_redis()
    started = local.start()
    console.print(f"redis {'started' if started else 'already running'} at {local.url}")


@redis_app.command("stop")
@friendly_errors
def redis_stop() -> None:
    """Stop the project-local Redis (snapshotting its data)."""
    _local_redis().stop()
    console.print("redis stopped")


@app.command()
@friendly_errors
def bench(
    items: int = 100_000,
    dim: int = 32,
    queries: int = 1000,
    k: int = 10,
    threads: int = 1,
) -> None:
    """Benchmark IVF-PQ search against exact search on synthetic vectors (bench/README.md)."""
    from bench.index_search import run

    run(items, dim, queries, k, threads)


@app.command()
@friendly_errors
def demo(epochs: int = 20) -> None:
    """ML-100K end to end: fetch → Airflow pipeline → Redis + server → queries → stop."""
    from recall_cli.demo import run_demo

    sys.exit(run_demo(console, epochs))


if __name__ == "__main__":
    app()
