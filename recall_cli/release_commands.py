"""`recall release status|promote|rollback|pin|unpin`: what the fleet serves, and moving it.

Every move goes through ``serving.fleet.ship`` (canary first, verified, reverted on any
failure). A pin (``indexes/PIN``) is durable: watchers, nightly runs and `promote` respect
it until `unpin`. Without a fleet (``RECALL_FLEET`` empty) pin/rollback/unpin only move the
pointers and the servers' watchers follow within one poll interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from recall_cli import paths
from recall_cli.output import ArtifactRoot, console, err, friendly_errors, stage
from recall_cli.serving_commands import (
    AdminTokenFile,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsServerName,
    UseTls,
)

if TYPE_CHECKING:  # serving.fleet pulls in gRPC and Faiss: imported when a command runs
    from serving.fleet import FleetSettings

release_app = typer.Typer(
    help="Ship index versions to the fleet; roll back and pin (docs/runbook.md).",
    no_args_is_help=True,
)

INDEXES = "indexes"
Fleet = Annotated[
    str | None,
    typer.Option(help="Comma-separated RecallAdmin addresses; default $RECALL_FLEET."),
]
Canary = Annotated[
    str | None,
    typer.Option(help="Canary count or addresses; default $RECALL_FLEET_CANARY or 1."),
]
Reason = Annotated[str, typer.Option(help="Why (kept in the pin; shown by `status`).")]
# The ship's probe queries are RecallService calls: their token is the service one (the
# admin token goes in --token-file, as for `recall status|load-index`).
ProbeTokenFile = Annotated[
    str | None,
    typer.Option(
        "--service-token-file",
        envvar="RECALL_SERVICE_TOKEN_FILE",
        help="File holding the RecallService bearer token (the ship's probe queries).",
    ),
]


def _settings(
    fleet: str | None,
    canary: str | None,
    tls: bool = False,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_server_name: str | None = None,
    token_file: str | None = None,
    service_token_file: str | None = None,
) -> FleetSettings:
    """The fleet settings: these options (each also read from its RECALL_* variable by
    Typer), the rest from the environment (serving.fleet.FleetSettings)."""
    from serving.fleet import FleetSettings

    overrides: dict[str, Any] = {
        "fleet": fleet,
        "fleet_canary": canary,
        "tls": tls or None,
        "tls_ca_file": tls_ca,
        "client_tls_cert_file": tls_cert,
        "client_tls_key_file": tls_key,
        "tls_server_name": tls_server_name,
        "admin_token_file": token_file,
        "service_token_file": service_token_file,
    }
    return FleetSettings(**{k: v for k, v in overrides.items() if v is not None})


def _members(fleet: str) -> list[str]:
    from serving.fleet import parse_fleet

    return parse_fleet(fleet) if fleet.strip() else []


def _ship(artifact_root: str, version: str, settings: FleetSettings) -> bool:
    """Ship ``version`` without moving LATEST (the pin already says what to serve).
    False when no fleet is configured (the watchers will follow the pointers)."""
    from artifacts.store import ArtifactStore
    from serving.fleet import pick_canary, ship

    members = _members(settings.fleet)
    if not members:
        console.print(
            "  no fleet configured (RECALL_FLEET / --fleet): servers follow "
            "indexes/PIN and LATEST within one watch interval"
        )
        return False
    chosen = pick_canary(members, settings.fleet_canary)
    stage(f"shipping index {version} to {len(members)} servers (canary {', '.join(chosen)})")
    report = ship(
        ArtifactStore(artifact_root), version, members, chosen, promote=False, settings=settings
    )
    console.print(f"  [green]ok[/] every server serves {version} ({report.seconds:.1f} s)")
    return True


@release_app.command("status")
@friendly_errors
def status(
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    fleet: Fleet = None,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
    service_token_file: ProbeTokenFile = None,
) -> None:
    """Each fleet member's index and model version, LATEST, PREVIOUS and PIN; flags skew
    (members serving different versions, or not the version the store says to serve)."""
    from artifacts.store import ArtifactStore
    from serving.fleet import fleet_status, skew

    settings = _settings(
        fleet, None, tls, tls_ca, tls_cert, tls_key, tls_server_name, token_file, service_token_file
    )
    store = ArtifactStore(artifact_root)
    latest = store.latest_or_none(INDEXES)
    held = store.pinned(INDEXES)
    target = held.version if held else latest
    console.print(f"indexes/LATEST    {latest or '(none)'}")
    console.print(f"indexes/PREVIOUS  {store.previous(INDEXES) or '(none)'}")
    if held:
        console.print(
            f"indexes/PIN       [bold yellow]{held.version}[/] by {held.by} at {held.at}: "
            f"{held.reason}"
        )
    else:
        console.print("indexes/PIN       (none)")
    newer = [v for v in store.versions(INDEXES) if latest and v > latest]
    if newer:
        console.print(f"published, not promoted: {', '.join(newer)}")
    members = _members(settings.fleet)
    if not members:
        console.print("no fleet configured (RECALL_FLEET / --fleet)")
        return
    statuses = fleet_status(members, settings.fleet_rpc_timeout_s, settings.client_security())
    table = Table(title=f"fleet ({len(members)} servers)")
    for column in ("server", "index", "model", "failed calls", ""):
        table.add_column(column)
    for s in statuses:
        if s.error:
            table.add_row(s.address, "-", "-", "-", f"[red]unreachable: {s.error}[/]")
            continue
        note = "" if s.index_version == target else f"[yellow]not on {target}[/]"
        table.add_row(
            s.address, s.index_version or "(none)", s.model_version, str(s.failed_calls), note
        )
    console.print(table)
    versions = skew(statuses)
    if len(versions) > 1:
        console.print(f"[bold red]SKEW[/]: the fleet serves {len(versions)} index versions")
    elif any(s.error for s in statuses):
        console.print("[bold red]unreachable servers[/]: the fleet's state is unknown")
    else:
        console.print(f"[green]converged[/] on {versions[0] if versions else '(none)'}")


@release_app.command("promote")
@friendly_errors
def promote(
    version: Annotated[str, typer.Argument(help="Index version to ship and make LATEST.")],
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    fleet: Fleet = None,
    canary: Canary = None,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
    service_token_file: ProbeTokenFile = None,
) -> None:
    """Ship VERSION through the canary flow and move indexes/LATEST to it (refused while a
    pin holds the fleet: `recall release unpin` first)."""
    from artifacts.store import ArtifactStore
    from serving.fleet import pick_canary, ship

    store = ArtifactStore(artifact_root)
    held = store.pinned(INDEXES)
    if held:
        err.print(
            f"[bold red]error:[/] indexes are pinned to {held.version} by {held.by} "
            f"({held.reason}); `recall release unpin` first"
        )
        raise typer.Exit(1)
    if not store.exists(INDEXES, version):
        err.print(f"[bold red]error:[/] no index {version} in {artifact_root}")
        raise typer.Exit(1)
    settings = _settings(
        fleet,
        canary,
        tls,
        tls_ca,
        tls_cert,
        tls_key,
        tls_server_name,
        token_file,
        service_token_file,
    )
    members = _members(settings.fleet)
    if not members:
        store.set_latest(INDEXES, version)
        console.print(
            f"[green]ok[/] indexes/LATEST → {version}; no fleet configured, so servers "
            "pick it up at their next poll"
        )
        return
    chosen = pick_canary(members, settings.fleet_canary)
    stage(f"shipping index {version} to {len(members)} servers (canary {', '.join(chosen)})")
    report = ship(store, version, members, chosen, promote=True, settings=settings)
    for step in report.steps:
        console.print(f"  {step}")
    console.print(f"[green]ok[/] {version} promoted and served everywhere ({report.seconds:.1f} s)")


def _hold(
    artifact_root: str,
    version: str,
    reason: str,
    settings: FleetSettings,
) -> None:
    """Pin ``version``, then ship it; a failed ship puts the earlier pin state back."""
    from artifacts.store import ArtifactStore
    from serving.errors import RecallError

    store = ArtifactStore(artifact_root)
    earlier = store.pinned(INDEXES)
    # The pin goes first: during the ship, a watcher must not pull a server back to LATEST.
    held = store.pin(INDEXES, version, reason=reason)
    console.print(f"[green]pinned[/] indexes to {held.version} ({held.reason})")
    try:
        _ship(artifact_root, version, settings)
    except RecallError:
        if earlier:
            store.pin(INDEXES, earlier.version, reason=earlier.reason, by=earlier.by)
        else:
            store.unpin(INDEXES)
        err.print("the pin was put back as it was before this command")
        raise


@release_app.command("rollback")
@friendly_errors
def rollback(
    version: Annotated[
        str | None,
        typer.Argument(help="Index version to roll back to; default indexes/PREVIOUS."),
    ] = None,
    reason: Reason = "rollback",
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    fleet: Fleet = None,
    canary: Canary = None,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
    service_token_file: ProbeTokenFile = None,
) -> None:
    """Pin the previous (or given) index version and ship it to the fleet. The pin holds
    across watcher polls and nightly runs until `recall release unpin`."""
    from artifacts.store import ArtifactStore

    store = ArtifactStore(artifact_root)
    target = version or store.previous(INDEXES)
    if not target:
        err.print(
            "[bold red]error:[/] no previous index recorded (indexes/PREVIOUS); "
            "name the version: `recall release rollback VERSION`"
        )
        raise typer.Exit(1)
    settings = _settings(
        fleet,
        canary,
        tls,
        tls_ca,
        tls_cert,
        tls_key,
        tls_server_name,
        token_file,
        service_token_file,
    )
    _hold(artifact_root, target, reason, settings)


@release_app.command("pin")
@friendly_errors
def pin(
    version: Annotated[
        str | None, typer.Argument(help="Index version to hold; default indexes/LATEST.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (required; shown by `status`).")] = "",
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    fleet: Fleet = None,
    canary: Canary = None,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
    service_token_file: ProbeTokenFile = None,
) -> None:
    """Hold the fleet on VERSION (default: LATEST) until `unpin`: watchers and nightly runs
    respect the pin; a publish under a pin publishes but does not ship."""
    from artifacts.store import ArtifactStore

    if not reason.strip():
        err.print('[bold red]error:[/] a pin needs --reason "why"')
        raise typer.Exit(1)
    target = version or ArtifactStore(artifact_root).latest(INDEXES)
    settings = _settings(
        fleet,
        canary,
        tls,
        tls_ca,
        tls_cert,
        tls_key,
        tls_server_name,
        token_file,
        service_token_file,
    )
    _hold(artifact_root, target, reason, settings)


@release_app.command("unpin")
@friendly_errors
def unpin(
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
    fleet: Fleet = None,
    canary: Canary = None,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
    service_token_file: ProbeTokenFile = None,
) -> None:
    """Release the pin and ship indexes/LATEST to the fleet (canary first). Versions
    published under the pin stay unpromoted: `recall release promote VERSION`."""
    from artifacts.store import ArtifactStore
    from serving.errors import RecallError

    settings = _settings(
        fleet,
        canary,
        tls,
        tls_ca,
        tls_cert,
        tls_key,
        tls_server_name,
        token_file,
        service_token_file,
    )
    store = ArtifactStore(artifact_root)
    latest = store.latest(INDEXES)
    removed = store.unpin(INDEXES)
    if removed is None:
        console.print("no pin was set")
    else:
        console.print(f"[green]unpinned[/] (was {removed.version}: {removed.reason})")
    try:
        _ship(artifact_root, latest, settings)
    except RecallError:
        if removed is not None:
            store.pin(INDEXES, removed.version, reason=removed.reason, by=removed.by)
            err.print(f"the pin on {removed.version} was put back")
        raise
