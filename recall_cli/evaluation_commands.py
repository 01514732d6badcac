"""`recall evaluate`: the evaluation harness (P1/P2, baselines, exact and served paths)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.table import Table

from recall_cli import paths
from recall_cli.output import console, err, friendly_errors, stage

SUMMARY_METRICS = {
    "recall@10": "R@10",
    "ndcg@10": "NDCG@10",
    "mrr@10": "MRR@10",
    "hit@10": "Hit@10",
    "recall@50": "R@50",
    "recall@100": "R@100",
}


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


@friendly_errors
def evaluate(
    data: Annotated[
        Path, typer.Option(help="Data directory (default: ML-100K, fetched if missing).")
    ] = paths.data_dir(),
    protocol: Annotated[
        str,
        typer.Option(
            help="p1 (RecBole random 80/10/10), p2 (leave-last-out), p2cold (p2 with a "
            "quarter of the test users cut to 5 training items), p3 (10 % of the items held "
            "out of training; they alone are ranked) or all."
        ),
    ] = "all",
    variant: Annotated[
        list[str] | None,
        typer.Option(help="Model variant to train and evaluate (repeatable); default: default."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: the training config's).")
    ] = None,
    served: Annotated[
        bool, typer.Option(help="Also evaluate through Redis + index + gRPC server.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the P1 split and of training.")] = 0,
    min_recall: Annotated[
        float,
        typer.Option(
            help="The served index's quality gate (ANN recall@10 and @100 against exact): "
            "0 measures and never refuses; the pipeline's default is 0.95."
        ),
    ] = 0.0,
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: var/reports/<UTC time>).")
    ] = None,
) -> None:
    """Evaluate the two-tower model against Pop, ItemKNN and EASE (P3: content baselines);
    write a Markdown report."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluation.harness import Callbacks, EvaluationConfig, run_evaluation
    from evaluation.model_under_test import VARIANTS
    from evaluation.report import write_report
    from evaluation.splits import PROTOCOLS

    protocols = PROTOCOLS if protocol == "all" else (protocol,)
    if protocol != "all" and protocol not in PROTOCOLS:
        _fail(f"--protocol {protocol}: expected p1, p2, p2cold, p3 or all")
    if not 0.0 <= min_recall <= 1.0:
        _fail(f"--min-recall {min_recall:g}: expected a recall in 0..1")
    variants = tuple(variant or ["default"])
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        _fail(f"--variant {', '.join(unknown)}: unknown; known: {', '.join(VARIANTS)}")
    if not data.is_dir() and data == paths.data_dir():
        from training.data.ml100k import fetch_ml100k

        stage(f"fetching ML-100K into {data}")
        fetch_ml100k(data, paths.cache_dir())
    if not data.is_dir():
        raise OSError(f"data directory {data} does not exist (try `recall data fetch`)")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out or paths.home() / "reports" / stamp
    config = EvaluationConfig(
        data_dir=data,
        out_dir=out_dir,
        protocols=protocols,
        variants=variants,
        epochs=epochs,
        served=served,
        seed=seed,
        min_recall=min_recall,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task("", total=None, visible=False)

        def on_stage(text: str) -> None:
            progress.update(bar, visible=False)
            stage(escape(text))

        def on_epoch(epoch: int, total: int, loss: float) -> None:
            progress.update(
                bar,
                visible=True,
                completed=epoch,
                total=total,
                description=f"  epoch {epoch}/{total} loss {loss:.3f}",
            )

        def on_served(done: int, total: int) -> None:
            progress.update(
                bar, visible=True, completed=done, total=total, description="  Recall over gRPC"
            )

        result = run_evaluation(config, Callbacks(on_stage, on_epoch, on_served))
    report = write_report(result, out_dir)
    table = Table(
        title=f"recall evaluate ({result.seconds:.0f} s)",
        caption="R: recall; means over test users; all metrics in the report",
    )
    table.add_column("")
    table.add_column("method", no_wrap=True)
    table.add_column("path")
    for header in SUMMARY_METRICS.values():
        table.add_column(header, justify="right")
    for r in result.results:
        values = (f"{r.metrics[m]:.4f}" for m in SUMMARY_METRICS)
        table.add_row(r.protocol, escape(r.method), r.path, *values)
    console.print(table)
    for run in result.runs:
        if run.error:
            err.print(f"[yellow]warning:[/] {run.protocol} [{run.variant}]: {run.error}")
    console.print(f"[green]report[/] {report}")
