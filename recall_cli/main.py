"""`recall`: fetch data, run the pipeline, train, build the index, load vectors, serve,
query, inspect. Every failure a user can cause ends with a one-line message and exit 1."""

import os
import sys

import typer

from recall_cli import artifact_commands as stages
from recall_cli import evaluation_commands
from recall_cli import freshness_commands as freshness
from recall_cli import serving_commands as serving
from recall_cli.output import console, friendly_errors

# TensorFlow's C++ start-up chatter is not for CLI users (tasks inherit this too).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(stages.data_app, name="data")
app.add_typer(stages.pipeline_app, name="pipeline")
app.command()(stages.train)
app.command()(evaluation_commands.evaluate)
app.add_typer(stages.model_app, name="model")
app.add_typer(stages.vectors_app, name="vectors")
app.add_typer(stages.index_app, name="index")
app.command()(serving.serve)
app.command()(serving.query)
app.command()(serving.status)
app.command("load-index")(serving.load_index)
app.add_typer(serving.redis_app, name="redis")
app.add_typer(freshness.interactions_app, name="interactions")
app.command()(freshness.refresher)


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
