"""`recall serve|query|status|load-index|redis`: running and talking to recall servers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from recall_cli import paths
from recall_cli.output import candidates_table, console, friendly_errors
from recall_settings import defaults

redis_app = typer.Typer(help="The project-local Redis server.", no_args_is_help=True)


@friendly_errors
def serve(
    port: Annotated[
        int | None, typer.Option(help=f"Default: ${defaults.PORT.env} or {defaults.PORT.default}.")
    ] = None,
    admin_port: Annotated[
        int | None,
        typer.Option(help=f"Default: ${defaults.ADMIN_PORT.env} or {defaults.ADMIN_PORT.default}."),
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Default: $RECALL_REDIS_URL.")] = None,
    artifact_root: Annotated[
        str | None, typer.Option(help="Default: $RECALL_ARTIFACT_ROOT or $RECALL_HOME/artifacts.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Server processes sharing the port (default: $RECALL_WORKERS or 1); "
            "worker 0 serves the admin port for all.",
        ),
    ] = None,
) -> None:
    """Run a recall server on the latest published index until Ctrl-C / SIGTERM.

    Every setting (serving/config.py) comes from RECALL_* env vars or the YAML file named by
    RECALL_CONFIG; options given here win over both.
    """
    from serving.config import load_settings
    from serving.server import serve as serve_until_stopped

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(
        port=port,
        admin_port=admin_port,
        redis_url=redis_url,
        artifact_root=artifact_root,
        workers=workers,
    )
    serve_until_stopped(settings)


def _target(port: int) -> str:
    return f"{defaults.HOST.value()}:{port}"


# The server's two ports, as every client command takes them.
Port = Annotated[int, typer.Option(envvar=defaults.PORT.env)]
AdminPort = Annotated[int, typer.Option(envvar=defaults.ADMIN_PORT.env)]


# Client-side security options, shared by query/status/load-index and `interactions add`.
# The names mirror the server's settings (RECALL_ADMIN_TOKEN_FILE, RECALL_SERVICE_TOKEN_FILE:
# the same files).
TlsCa = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        envvar="RECALL_TLS_CA_FILE",
        help="PEM CA that signed the server's certificate; turns TLS on.",
    ),
]
TlsCert = Annotated[
    str | None,
    typer.Option(
        "--tls-cert",
        envvar="RECALL_CLIENT_TLS_CERT_FILE",
        help="PEM client certificate for mTLS (with --tls-key).",
    ),
]
TlsKey = Annotated[
    str | None,
    typer.Option("--tls-key", envvar="RECALL_CLIENT_TLS_KEY_FILE", help="PEM key of --tls-cert."),
]
TlsServerName = Annotated[
    str | None,
    typer.Option(
        "--tls-server-name",
        envvar="RECALL_TLS_SERVER_NAME",
        help="Name to expect in the server's certificate (default: the host dialled).",
    ),
]
UseTls = Annotated[
    bool,
    typer.Option(
        "--tls/--no-tls",
        envvar="RECALL_TLS",
        help="TLS with the system's trust store (implied by --tls-ca / --tls-cert).",
    ),
]

ServiceTokenFile = Annotated[
    str | None,
    typer.Option(
        "--token-file",
        envvar="RECALL_SERVICE_TOKEN_FILE",
        help="File holding the RecallService bearer token (if the server asks for one).",
    ),
]
AdminTokenFile = Annotated[
    str | None,
    typer.Option(
        "--token-file",
        envvar="RECALL_ADMIN_TOKEN_FILE",
        help="File holding the RecallAdmin bearer token (first line).",
    ),
]


def _security(
    tls: bool,
    ca: str | None,
    cert: str | None,
    key: str | None,
    server_name: str | None,
    *,
    token_file: str | None = None,
    admin_token_file: str | None = None,
) -> Any:
    """A ``serving.client.ClientSecurity`` from the options (tokens read from their files)."""
    from serving.client import ClientSecurity, read_token

    return ClientSecurity(
        tls=tls,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        server_name=server_name,
        token=read_token(token_file) if token_file else None,
        admin_token=read_token(admin_token_file) if admin_token_file else None,
    )


@friendly_errors
def query(
    user: Annotated[list[str], typer.Option("--user", "-u", help="User id (repeatable).")],
    k: Annotated[int, typer.Option("--k", "-k", help="Candidates per user.")] = 10,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Item id to exclude (repeatable).")
    ] = None,
    exclude_seen: Annotated[
        bool, typer.Option(help="Also exclude the user's history (seen filter).")
    ] = False,
    data: Annotated[Path | None, typer.Option(help="Data directory, to show item titles.")] = None,
    port: Port = defaults.PORT.default,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: ServiceTokenFile = None,
) -> None:
    """Ask a running recall server for candidates and print them."""
    from serving.client import RecallClient

    security = _security(tls, tls_ca, tls_cert, tls_key, tls_server_name, token_file=token_file)
    titles: dict[str, str] = {}
    if data is not None:
        from training.data.schema import load_dataset

        titles = load_dataset(data).item_titles()
    client = RecallClient(_target(port), security=security)
    try:
        for user_id in user:
            reply = client.recall(user_id, k, exclude or [], exclude_seen)
            console.print(candidates_table(user_id, reply, titles))
    finally:
        client.close()


def admin_client(
    port: int,
    admin_port: int,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_server_name: str | None,
    token_file: str | None,
) -> Any:
    """A ``serving.client.RecallClient`` for the local server's ports, with the admin token."""
    from serving.client import RecallClient

    security = _security(
        tls, tls_ca, tls_cert, tls_key, tls_server_name, admin_token_file=token_file
    )
    return RecallClient(_target(port), _target(admin_port), security=security)


@friendly_errors
def status(
    port: Port = defaults.PORT.default,
    admin_port: AdminPort = defaults.ADMIN_PORT.default,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
) -> None:
    """Show what a running server serves (RecallAdmin/GetStatus)."""
    client = admin_client(
        port, admin_port, tls, tls_ca, tls_cert, tls_key, tls_server_name, token_file
    )
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
                "redis_breaker_state": s.redis_breaker_state,
                "user_vectors_loaded": s.user_vectors_loaded,
                "user_vector_count": s.user_vector_count,
                "fresh_segment_size": s.fresh_segment_size,
                "deny_set_size": s.deny_set_size,
            }
        )
    )


@friendly_errors
def load_index(
    version: Annotated[str, typer.Argument(help="Index version; empty = LATEST.")] = "",
    port: Port = defaults.PORT.default,
    admin_port: AdminPort = defaults.ADMIN_PORT.default,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
) -> None:
    """Tell a running server to verify, load and swap to an index version (rollback too)."""
    from serving.client import RecallClient

    security = _security(
        tls, tls_ca, tls_cert, tls_key, tls_server_name, admin_token_file=token_file
    )
    client = RecallClient(_target(port), _target(admin_port), security=security)
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
    """Start the project-local Redis (127.0.0.1:$RECALL_REDIS_PORT, data in var/redis; AOF,
    fsync every second). Reuses it if it already runs; any other server on the port is an
    error."""
    local = _local_redis()
    started = local.start()
    console.print(
        f"redis {'started' if started else 'already running'} at {local.url} "
        f"(data in {local.directory})"
    )


@redis_app.command("stop")
@friendly_errors
def redis_stop(
    save: Annotated[
        bool,
        typer.Option(
            help="Write the RDB snapshot before stopping (--no-save: only the append-only "
            "file, which Redis flushes either way)."
        ),
    ] = True,
) -> None:
    """Stop the project-local Redis. Never stops a server that is not the project's."""
    local = _local_redis()
    if local.stop(save=save):
        console.print(f"redis stopped (port {local.port})")
    else:
        console.print(f"redis is not running (nothing answers on 127.0.0.1:{local.port})")
