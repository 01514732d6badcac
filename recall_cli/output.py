"""How the `recall` command talks to people: consoles, stage lines, friendly errors."""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from recall_settings.defaults import Setting


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
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            # The error classes are imported only now: importing them up front pulls in
            # pandas (training.data), seconds of start-up for every command.
            from pydantic import ValidationError

            from artifacts.errors import ArtifactError
            from keyspace.connection import RedisConnectionConfigError
            from pipelines.runner import PipelineError
            from recall_cli.local_redis import LocalRedisError
            from recall_settings import SettingError
            from serving.errors import RecallError
            from training.data.ml100k import FetchError
            from training.data.schema import DataFormatError

            expected = (
                ArtifactError,
                RecallError,
                DataFormatError,
                FetchError,
                LocalRedisError,
                PipelineError,
                ValidationError,
                OSError,
                RedisConnectionConfigError,
                SettingError,
            )
            if isinstance(exc, expected):
                err.print(f"[bold red]error:[/] {exc}")
                raise typer.Exit(1) from None
            import grpc

            if isinstance(exc, grpc.RpcError):
                err.print(f"[bold red]error:[/] {exc.code().name}: {exc.details()}")
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    err.print("is a recall server running there? (`make serve` starts one)")
                raise typer.Exit(1) from None
            raise

    return wrapper  # type: ignore[return-value]


def candidates_table(user_id: str, reply: Any, titles: dict[str, str]) -> Table:
    """A RecallResponse as a table: rank, item, title (when known), score."""
    from serving.api.recall.v1 import recall_pb2

    table = Table(
        title=f"user {user_id} — {recall_pb2.Source.Name(reply.source)}",
        caption=f"model {reply.model_version} · index {reply.index_version}",
        min_width=64,
    )
    table.add_column("#", justify="right")
    table.add_column("item")
    if titles:
        table.add_column("title")
    fallback = reply.source == recall_pb2.SOURCE_FALLBACK
    table.add_column("popularity share" if fallback else "score", justify="right")
    for rank, c in enumerate(reply.candidates, 1):
        title = [titles.get(c.item_id, "?")] if titles else []
        table.add_row(str(rank), c.item_id, *title, f"{c.score:.4f}")
    return table


def stage(text: str) -> None:
    """A stage line: what the command is doing now."""
    console.print(f"[bold cyan]▸[/] {text}")


ArtifactRoot = Annotated[str, typer.Option(help="Artifact store root (path or fsspec URL).")]
RedisUrl = Annotated[str, typer.Option(help="Redis holding user vectors.")]


def setting_option(setting: Setting[Any], help: str) -> Any:
    """A Typer option whose default, environment variable and bounds come from a shared
    setting (``recall_settings.defaults``): ``--epochs`` defaults to ``$RECALL_EPOCHS`` or
    the default the DAGs and the server use, and out-of-range values are refused by Typer
    with a one-line usage error."""
    return typer.Option(
        setting.default,
        envvar=setting.env,
        min=setting.minimum,
        max=setting.maximum,
        help=help,
    )
