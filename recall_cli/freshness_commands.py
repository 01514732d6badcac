"""`recall interactions add` and `recall refresher`: fresh user vectors without retraining."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer

from recall_cli.output import console, friendly_errors
from recall_cli.serving_commands import (
    Port,
    ServiceTokenFile,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsServerName,
    UseTls,
    _security,
    _target,
)
from recall_settings import defaults

interactions_app = typer.Typer(
    help="Interactions (user histories) through a running recall server.", no_args_is_help=True
)


@interactions_app.command("add")
@friendly_errors
def interactions_add(
    user: Annotated[str, typer.Argument(help="User id.")],
    items: Annotated[list[str], typer.Argument(help="Item ids, oldest first.")],
    timestamp: Annotated[
        int, typer.Option(help="Unix seconds of the first item (each next one +1 s); 0 = now.")
    ] = 0,
    port: Port = defaults.PORT.default,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: ServiceTokenFile = None,
) -> None:
    """Record that USER interacted with ITEMS (RecordInteractions over gRPC).

    The server appends them to the user's history; a running refresher rewrites the user's
    vector within seconds (`recall query -u USER` then shows the new candidates).
    TLS and token options as for `recall query` (RecordInteractions is a RecallService call:
    the service token, not the admin one).
    """
    import time

    from serving.client import RecallClient

    # Items given on one command line are in time order: oldest first, one second apart.
    start = timestamp or int(time.time()) - len(items) + 1
    security = _security(tls, tls_ca, tls_cert, tls_key, tls_server_name, token_file=token_file)
    client = RecallClient(_target(port), security=security)
    try:
        reply = client.record_interactions(
            [(user, item, start + i) for i, item in enumerate(items)]
        )
    finally:
        client.close()
    console.print(f"recorded {reply.accepted} interaction(s) of user {user}")
    if reply.unknown_items:
        console.print(
            f"[yellow]{reply.unknown_items} not in the serving index (not stored):[/] "
            + ", ".join(reply.unknown_item_ids)
        )


@friendly_errors
def refresher(
    redis_url: Annotated[str | None, typer.Option(help="Default: $RECALL_REDIS_URL.")] = None,
    artifact_root: Annotated[
        str | None, typer.Option(help="Default: $RECALL_ARTIFACT_ROOT or $RECALL_HOME/artifacts.")
    ] = None,
) -> None:
    """Run the user-vector refresher until Ctrl-C / SIGTERM.

    Reads the recall:events stream (consumer group "refreshers"), re-encodes the users whose
    history changed with the serving model's user tower and rewrites their vectors in
    Redis. Settings: RECALL_* env (training/refresher.py, RefresherSettings).
    """
    from training.refresher import RefresherSettings, make_refresher

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {"redis_url": redis_url, "artifact_root": artifact_root}
    settings = RefresherSettings(**{k: v for k, v in overrides.items() if v is not None})
    worker = make_refresher(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger(__name__).info(
        "refresher %s on %s (artifacts %s)",
        worker.consumer,
        settings.redis_url,
        settings.artifact_root,
    )
    worker.run(stop)
