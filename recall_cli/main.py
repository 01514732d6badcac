"""`recall`: fetch data, run the pipeline, train, build the index, load vectors, serve,
query, inspect. Every failure a user can cause ends with a one-line message and exit 1."""

import os
import sys
from typing import Annotated

import typer

from recall_cli import artifact_commands as stages
from recall_cli import catalogue_commands as catalogue
from recall_cli import evaluation_commands, key_commands
from recall_cli import freshness_commands as freshness
from recall_cli import release_commands as release
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
app.add_typer(catalogue.items_app, name="items")
app.add_typer(key_commands.keys_app, name="keys")
app.add_typer(release.release_app, name="release")


bench_app = typer.Typer(help="Benchmarks (bench/README.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("index")
@friendly_errors
def bench_index(
    items: int = 100_000,
    dim: int = 32,
    queries: int = 1000,
    k: int = 10,
    threads: int = 1,
) -> None:
    """IVF-PQ search against exact search on synthetic vectors."""
    from bench.index_search import run

    run(items, dim, queries, k, threads)


@bench_app.command("serve")
@friendly_errors
def bench_serve(
    seconds: Annotated[float, typer.Option(help="Load per row (≥ 15 for published numbers).")] = 15,
    items: Annotated[int, typer.Option(help="Synthetic catalog size.")] = 1_000_000,
    users: Annotated[int, typer.Option(help="Synthetic users (vectors in Redis).")] = 100_000,
    dim: int = 64,
    k: int = 100,
    in_flight: Annotated[str, typer.Option(help="Comma-separated calls in flight.")] = "1,8,32,64",
    batching: Annotated[
        str, typer.Option(help="on, off or both: RECALL_BATCHING for the server.")
    ] = "both",
    demo: Annotated[bool, typer.Option(help="Also load the published (demo) index.")] = True,
    demo_artifacts: Annotated[
        str | None, typer.Option(help="Store holding the demo index; default $RECALL_HOME's.")
    ] = None,
    cost_sizes: Annotated[
        str, typer.Option(help="Comma-separated catalog sizes for the build-cost table.")
    ] = "100000,1000000",
    hnsw: Annotated[bool, typer.Option(help="Measure the hnswlib peer.")] = True,
    peers: Annotated[
        str,
        typer.Option(help="Index peers to compare: all, or a comma-separated subset."),
    ] = "all",
    fast_scan: Annotated[
        bool,
        typer.Option(help="Synthetic index with 4-bit fast-scan PQ codes (docs/artifacts.md)."),
    ] = False,
) -> None:
    """A real `recall serve` under load vs the echo ceiling and the in-process floor, the
    recall/latency curve, build cost, and the classic index peers (bench/README.md)."""
    from bench.peer_report import parse_peers
    from bench.serve import run
    from recall_cli import paths

    if batching not in ("on", "off", "both"):
        raise typer.BadParameter("--batching must be on, off or both")
    try:
        chosen_peers = parse_peers(peers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--peers") from exc
    run(
        seconds=seconds,
        items=items,
        users=users,
        dim=dim,
        k=k,
        batching=batching,
        levels=[int(c) for c in in_flight.split(",") if c],
        demo_root=(demo_artifacts or paths.default_artifact_root()) if demo else None,
        home=paths.home() / "bench",
        cost_sizes=[int(n) for n in cost_sizes.split(",") if n],
        hnsw=hnsw,
        peers=chosen_peers,
        fast_scan=fast_scan,
    )


@bench_app.command("soak")
@friendly_errors
def bench_soak(
    seconds: Annotated[
        float, typer.Option(help="Length of the run (≥ 600 for published figures).")
    ] = 600,
    sample_s: Annotated[float, typer.Option(help="Seconds between samples.")] = 10,
    swap_s: Annotated[float, typer.Option(help="Seconds between index swaps.")] = 30,
    outage_s: Annotated[float, typer.Option(help="How long each Redis fault lasts.")] = 5,
    users: int = 5_000,
    items: int = 20_000,
    recall_workers: Annotated[int, typer.Option(help="Concurrent Recall callers.")] = 6,
    batch_workers: Annotated[int, typer.Option(help="Concurrent BatchRecall callers.")] = 1,
    max_rss_growth: Annotated[
        float, typer.Option(help="Flat: RSS growth over the last half below this fraction.")
    ] = 0.05,
) -> None:
    """Mixed load on a real server for SECONDS with index swaps and a Redis stop and
    kill -9: RSS, open fds and calls by outcome every SAMPLE_S, then a verdict; exit 1 when
    not flat (bench/README.md)."""
    from bench.soak import SoakConfig, run
    from recall_cli import paths

    if seconds <= 0 or sample_s <= 0 or swap_s <= 0 or outage_s <= 0:
        raise typer.BadParameter("--seconds, --sample-s, --swap-s and --outage-s must be > 0")
    config = SoakConfig(
        seconds=seconds,
        sample_s=sample_s,
        swap_s=swap_s,
        outage_s=outage_s,
        users=users,
        items=items,
        recall_workers=recall_workers,
        batch_workers=batch_workers,
        max_rss_growth=max_rss_growth,
    )
    try:
        report = run(config, paths.home() / "bench")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: run() has stopped what it started
        console.print("soak interrupted; its server and Redis are stopped, its files removed")
        raise typer.Exit(130) from None
    if not report.flat:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def demo(
    epochs: Annotated[
        int, typer.Option(help="Most training epochs (early stopping usually stops at 5-8).")
    ] = 10,
) -> None:
    """ML-100K end to end: fetch → Airflow pipeline → Redis + server → queries → stop."""
    from recall_cli.demo import run_demo

    sys.exit(run_demo(console, epochs))


if __name__ == "__main__":
    app()
