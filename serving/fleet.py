"""Shipping an index version to a fleet of recall servers over RecallAdmin.

``ship`` is the push path (the pipeline's ``ship`` task, `recall release`):

1. ``GetStatus`` on every member (all must answer; their versions are what a revert restores);
2. ``LoadIndex(version)`` on the canary members, then verify each: it reports the version,
   probe ``Recall`` queries for known users of the index's model come back
   ``SOURCE_USER_VECTOR`` from that version, and its ``failed_calls`` counter does not rise
   over ``canary_watch_s`` seconds;
3. promote: move ``indexes/LATEST`` (only if asked; a rollback ships a pinned version and
   leaves LATEST alone);
4. ``LoadIndex`` + the same probes on the rest, then check that every member reports it.

Any failure puts every member already asked to load back on the version it served before,
moves LATEST back if step 3 moved it, and raises ``ShipFailed`` saying where and why.

Pull mode (each server polling LATEST, ``RECALL_WATCH_INTERVAL_S``) keeps working beside
it: only step 3 moves LATEST, after a verified canary, so a watcher never runs ahead of
the canary; watchers follow ``indexes/PIN`` while one is set, as ``ship`` targets do.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from artifacts.errors import ArtifactError
from artifacts.store import ArtifactStore, split_uri
from recall_settings import defaults
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import ClientSecurity, read_token
from serving.errors import RecallError
from serving.index.artifact import INDEX_KIND
from serving.model_artifact import open_model_artifact
from serving.security import AUTHORIZATION, SecurityConfigError
from serving.tasks import index_model_version

log = logging.getLogger(__name__)


class FleetConfigError(RecallError):
    """RECALL_FLEET / RECALL_FLEET_CANARY cannot be used as given."""


class ShipFailed(RecallError):
    """A ship (or its verification) failed; the fleet was put back where it was."""


class FleetSettings(BaseSettings):
    """Where the fleet is and how a ship checks it; ``RECALL_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RECALL_", extra="forbid")

    fleet: str = Field(
        default=defaults.FLEET.default,
        description=(
            "Comma-separated RecallAdmin addresses (host:port). A name that resolves to "
            "several addresses (a Kubernetes headless service) stands for all of them. "
            "Empty: no fleet; servers pull indexes/LATEST and the ship task does nothing."
        ),
    )
    fleet_canary: str = Field(
        default=defaults.FLEET_CANARY.default,
        description=(
            "The canary: a count (the first N members) or comma-separated member addresses."
        ),
    )
    fleet_probe_users: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Known users of the index's model probed on each server.",
    )
    fleet_canary_watch_s: float = Field(
        default=2.0,
        ge=0,
        description="How long the canary is re-probed and its failed_calls watched, seconds.",
    )
    fleet_rpc_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline of each GetStatus / probe Recall, seconds."
    )
    fleet_load_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Deadline of each LoadIndex (verify + read the index), seconds.",
    )
    # How the shipper authenticates: the same variables `recall status|query` read.
    tls: bool = Field(default=False, description="TLS with the system's trust store.")
    tls_ca_file: str | None = Field(
        default=None, description="PEM CA of the servers' certificates; turns TLS on."
    )
    client_tls_cert_file: str | None = Field(
        default=None, description="PEM client certificate for mTLS (with the key)."
    )
    client_tls_key_file: str | None = Field(default=None, description="Its PEM key.")
    tls_server_name: str | None = Field(
        default=None,
        description=(
            "Name expected in the servers' certificates (needed when a headless service "
            "name expands to pod IPs that the certificates do not list)."
        ),
    )
    admin_token_file: str | None = Field(
        default=None, description="RecallAdmin bearer token file (LoadIndex, GetStatus)."
    )
    service_token_file: str | None = Field(
        default=None, description="RecallService bearer token file (the probe queries)."
    )

    def client_security(self) -> ClientSecurity:
        """The channels' TLS and tokens (token files read now; FleetConfigError if not)."""
        try:
            return ClientSecurity(
                tls=self.tls,
                ca_file=self.tls_ca_file,
                cert_file=self.client_tls_cert_file,
                key_file=self.client_tls_key_file,
                server_name=self.tls_server_name,
                token=read_token(self.service_token_file) if self.service_token_file else None,
                admin_token=read_token(self.admin_token_file) if self.admin_token_file else None,
            )
        except SecurityConfigError as exc:
            raise FleetConfigError(f"fleet client security: {exc}") from exc


# ---------------------------------------------------------------- addresses
Resolver = Callable[[str, int], list[str]]


def _resolve(host: str, port: int) -> list[str]:
    """IPv4 addresses of ``host`` (IPv6 if it has none), distinct, in resolver order."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if found:
            return found
    raise FleetConfigError(f"fleet member {host}:{port}: the name does not resolve")


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FleetConfigError(
            f"fleet member {address!r} is not host:port (RECALL_FLEET lists admin addresses)"
        )
    return host, int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_fleet(spec: str, resolve: Resolver = _resolve) -> list[str]:
    """The members named by a RECALL_FLEET value, in order, without duplicates.

    A literal IP or a name with one address stays as written; a name with several
    addresses (a headless service: one per pod) becomes one member per address.
    """
    members: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        host, port = _split(entry)
        try:
            ipaddress.ip_address(host)
            members.append(_join(host, port))
            continue
        except ValueError:
            pass
        addresses = resolve(host, port)
        if len(addresses) == 1:
            members.append(_join(host, port))
        else:
            members.extend(_join(a, port) for a in addresses)
    return list(dict.fromkeys(members))


def pick_canary(members: Sequence[str], spec: str) -> list[str]:
    """The canary members: the first N for a count, else the named members (which must
    be in the fleet). Always at least one, never more than the fleet."""
    spec = spec.strip() or "1"
    if spec.isdigit():
        count = int(spec)
        if count < 1:
            raise FleetConfigError("RECALL_FLEET_CANARY must be at least 1")
        return list(members[:count])
    named = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in named if n not in members]
    if unknown:
        raise FleetConfigError(
            f"canary {', '.join(unknown)} not in the fleet ({', '.join(members)})"
        )
    return named


# ---------------------------------------------------------------- one member
@dataclass(frozen=True)
class MemberStatus:
    """What one member reported (``error`` set, versions empty, when it did not answer)."""

    address: str
    index_version: str = ""
    model_version: str = ""
    recall_port: int = 0
    failed_calls: int = 0
    error: str = ""


def _rpc_error(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()


class MemberConnection:
    """RecallAdmin (and, for probes, RecallService) of one fleet member; every call has a
    deadline. Close it when done."""

    def __init__(
        self,
        address: str,
        rpc_timeout_s: float,
        load_timeout_s: float,
        security: ClientSecurity | None = None,
    ) -> None:
        self.address = address
        self.rpc_timeout_s = rpc_timeout_s
        self.load_timeout_s = load_timeout_s
        self.security = security or ClientSecurity()
        self._admin_metadata = _bearer(self.security.admin_token)
        try:
            self._admin_channel = self.security.channel(address)
        except SecurityConfigError as exc:  # an unreadable PEM file
            raise FleetConfigError(f"fleet client security: {exc}") from exc
        self._admin = recall_pb2_grpc.RecallAdminStub(self._admin_channel)
        self._recall_channel: grpc.Channel | None = None

    def status(self) -> MemberStatus:
        """GetStatus; raises grpc.RpcError when the member does not answer."""
        reply = self._admin.GetStatus(
            recall_pb2.GetStatusRequest(),
            timeout=self.rpc_timeout_s,
            metadata=self._admin_metadata,
        )
        return MemberStatus(
            self.address,
            reply.index_version,
            reply.model_version,
            reply.recall_port,
            reply.failed_calls,
        )

    def load(self, version: str) -> None:
        request = recall_pb2.LoadIndexRequest(version=version)
        self._admin.LoadIndex(request, timeout=self.load_timeout_s, metadata=self._admin_metadata)

    def probe(self, recall_port: int, users: Sequence[str], version: str) -> None:
        """Recall for each user on this member's RecallService; raises ShipFailed unless
        each answer is non-empty, from ``version``, and SOURCE_USER_VECTOR."""
        if not recall_port:
            raise ShipFailed(f"{self.address} does not report its recall port; cannot probe it")
        if self._recall_channel is None:
            host, _ = _split(self.address)
            self._recall_channel = self.security.channel(_join(host, recall_port))
        stub = recall_pb2_grpc.RecallServiceStub(self._recall_channel)
        metadata = _bearer(self.security.token)
        for user in users:
            request = recall_pb2.RecallRequest(user_id=user, k=10)
            try:
                answer = stub.Recall(request, timeout=self.rpc_timeout_s, metadata=metadata)
            except grpc.RpcError as exc:
                raise ShipFailed(f"probe for user {user}: {_rpc_error(exc)}") from exc
            if answer.index_version != version:
                raise ShipFailed(
                    f"probe for user {user} answered from index {answer.index_version}, "
                    f"not {version} (did something else load an index meanwhile?)"
                )
            if answer.source != recall_pb2.SOURCE_USER_VECTOR:
                source = recall_pb2.Source.Name(answer.source)
                raise ShipFailed(
                    f"probe for user {user} answered {source}, not SOURCE_USER_VECTOR "
                    "(are the model's user vectors in Redis?)"
                )
            if not answer.candidates:
                raise ShipFailed(f"probe for user {user} returned no candidates")

    def close(self) -> None:
        self._admin_channel.close()
        if self._recall_channel is not None:
            self._recall_channel.close()


def fleet_status(
    members: Sequence[str], rpc_timeout_s: float = 5.0, security: ClientSecurity | None = None
) -> list[MemberStatus]:
    """GetStatus of every member; one that does not answer has ``error`` set."""
    out = []
    for address in members:
        conn = MemberConnection(address, rpc_timeout_s, rpc_timeout_s, security)
        try:
            out.append(conn.status())
        except grpc.RpcError as exc:
            out.append(MemberStatus(address, error=_rpc_error(exc)))
        finally:
            conn.close()
    return out


def skew(statuses: Sequence[MemberStatus]) -> list[str]:
    """Distinct index versions the answering members serve, sorted ("" = no index).
    More than one is skew; an unreachable member is reported separately."""
    return sorted({s.index_version for s in statuses if not s.error})


# ---------------------------------------------------------------- ship
@dataclass
class ShipReport:
    version: str
    members: list[str]
    canary: list[str]
    previous: dict[str, str]  # member → index version it served before
    promoted: bool
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)


def probe_users(store: ArtifactStore, version: str, count: int) -> list[str]:
    """``count`` users of the model the index ``version`` was built from (spread over its
    user list): users whose vectors must be in Redis for that index to serve them."""
    model_version = index_model_version(store, version)
    users = open_model_artifact(store.local_dir("models", model_version)).user_ids()
    if not users:
        raise ShipFailed(f"model {model_version} has no users to probe")
    step = max(1, len(users) // count)
    return list(users[::step][:count])


def ship(
    store: ArtifactStore,
    version: str,
    members: Sequence[str],
    canary: Sequence[str],
    *,
    promote: bool = True,
    settings: FleetSettings | None = None,
    users: Sequence[str] | None = None,
) -> ShipReport:
    """Ship index ``version`` to ``members``, ``canary`` first (see the module docstring).

    Args:
        promote: move ``indexes/LATEST`` to ``version`` once the canary is verified
            (False for a pinned rollback: LATEST keeps naming the newest promoted index).
        users: probe users; default ``probe_users`` of the index's model.
    Raises:
        ShipFailed: with the reason; every member asked to load is back on its previous
            version and LATEST is where it was (the message says if a revert failed too).
    """
    settings = settings or FleetSettings()
    started = time.monotonic()
    if not members:
        raise FleetConfigError("no fleet members to ship to (RECALL_FLEET is empty)")
    unknown = [c for c in canary if c not in members]
    if unknown:
        raise FleetConfigError(f"canary {', '.join(unknown)} not in the fleet")
    try:
        store.local_dir(INDEX_KIND, version)  # exists, and fetched once for the probe users
        probes = list(users) if users else probe_users(store, version, settings.fleet_probe_users)
    except ArtifactError as exc:
        raise ShipFailed(f"cannot ship index {version}: {exc}") from exc
    security = settings.client_security()
    conns = {
        m: MemberConnection(
            m, settings.fleet_rpc_timeout_s, settings.fleet_load_timeout_s, security
        )
        for m in members
    }
    try:
        before: dict[str, MemberStatus] = {}
        for member, conn in conns.items():
            try:
                before[member] = conn.status()
            except grpc.RpcError as exc:
                raise ShipFailed(
                    f"fleet member {member} does not answer ({_rpc_error(exc)}); nothing was "
                    "changed (fix or remove it from RECALL_FLEET first)"
                ) from exc
        report = ShipReport(
            version,
            list(members),
            list(canary),
            {m: s.index_version for m, s in before.items()},
            promoted=False,
        )
        _ship_steps(store, conns, before, canary, probes, promote, settings, report)
    finally:
        for conn in conns.values():
            conn.close()
    report.seconds = time.monotonic() - started
    return report


def _ship_steps(
    store: ArtifactStore,
    conns: dict[str, MemberConnection],
    before: dict[str, MemberStatus],
    canary: Sequence[str],
    probes: Sequence[str],
    promote: bool,
    settings: FleetSettings,
    report: ShipReport,
) -> None:
    version = report.version
    asked: list[str] = []  # members sent LoadIndex: what a failure must revert
    old_latest, old_previous = store.latest_or_none(INDEX_KIND), store.previous(INDEX_KIND)
    stage, member = "canary", ""
    try:
        for member in canary:
            asked.append(member)
            _load_and_verify(conns[member], before[member], version, probes)
            _watch_canary(conns[member], before[member], version, probes, settings)
            report.steps.append(f"canary {member} verified")
        stage, member = "promote", ""
        if promote:
            store.set_latest(INDEX_KIND, version)
            report.promoted = True
            report.steps.append(f"indexes/LATEST → {version}")
        stage = "rollout"
        for member in [m for m in conns if m not in canary]:
            asked.append(member)
            _load_and_verify(conns[member], before[member], version, probes)
            report.steps.append(f"{member} verified")
        stage, member = "final check", ""
        for member in conns:
            now = conns[member].status()
            if now.index_version != version:
                raise ShipFailed(f"reports index {now.index_version!r}")
    except (ShipFailed, RecallError, ArtifactError, grpc.RpcError) as exc:
        reason = _rpc_error(exc) if isinstance(exc, grpc.RpcError) else str(exc)
        where = f"{stage} on {member}" if member else stage
        undo = _revert(conns, before, asked)
        if report.promoted and old_latest:
            store.set_latest(INDEX_KIND, old_latest, previous=old_previous)
            undo.append(f"indexes/LATEST back to {old_latest}")
        elif report.promoted:
            undo.append(f"indexes/LATEST left on {version} (there was none before)")
        raise ShipFailed(
            f"ship of index {version} failed at {where}: {reason}. "
            + ("; ".join(undo) if undo else "nothing had changed")
        ) from exc


def _load_and_verify(
    conn: MemberConnection, before: MemberStatus, version: str, probes: Sequence[str]
) -> MemberStatus:
    if before.index_version != version:
        conn.load(version)
    now = conn.status()
    if now.index_version != version:
        raise ShipFailed(f"reports index {now.index_version!r} after LoadIndex({version})")
    conn.probe(now.recall_port, probes, version)
    return now


def _watch_canary(
    conn: MemberConnection,
    before: MemberStatus,
    version: str,
    probes: Sequence[str],
    settings: FleetSettings,
) -> None:
    """Re-probe the canary for ``canary_watch_s`` and check its failed_calls did not rise
    (calls from real traffic count too: that is the point of a canary)."""
    deadline = time.monotonic() + settings.fleet_canary_watch_s
    while True:
        now = conn.status()
        if now.index_version != version:
            raise ShipFailed(f"switched away to index {now.index_version!r} while watched")
        if now.failed_calls > before.failed_calls:
            raise ShipFailed(
                f"failed calls rose from {before.failed_calls} to {now.failed_calls} "
                "(see its recall_requests_total by code)"
            )
        if time.monotonic() >= deadline:
            return
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        conn.probe(now.recall_port, probes, version)


def _revert(
    conns: dict[str, MemberConnection], before: dict[str, MemberStatus], asked: Sequence[str]
) -> list[str]:
    """Put every member in ``asked`` back on its previous version; what was done."""
    done: list[str] = []
    for member in asked:
        previous = before[member].index_version
        try:
            if conns[member].status().index_version == previous:
                continue  # its LoadIndex failed, so it kept serving the previous index
            if not previous:
                done.append(f"{member} had no index before; left on the new one")
                continue
            conns[member].load(previous)
            done.append(f"{member} reverted to {previous}")
        except grpc.RpcError as exc:
            done.append(f"REVERT FAILED on {member} ({_rpc_error(exc)}): fix it by hand")
    return done


# ---------------------------------------------------------------- the pipeline's ship task
def ship_published(index_uri: str, settings: FleetSettings | None = None) -> str:
    """The ``ship`` task: ship a just-published index through the canary flow.

    A no-op (said in the log and the return value) when no fleet is configured or while
    ``indexes/PIN`` holds another version: a publish under a pin publishes but does not
    ship. Returns a one-line summary; raises ShipFailed (the run fails) otherwise.
    """
    settings = settings or FleetSettings()
    root, _, version = split_uri(index_uri)
    store = ArtifactStore(root)
    if not settings.fleet.strip():
        message = (
            f"not shipping index {version}: no fleet configured (RECALL_FLEET is empty); "
            "servers that poll indexes/LATEST pick it up"
        )
        log.info(message)
        return message
    held = store.pinned(INDEX_KIND)
    if held is not None and held.version != version:
        message = (
            f"not shipping index {version}: indexes are pinned to {held.version} by {held.by} "
            f"at {held.at} ({held.reason}); it is published, LATEST is unchanged "
            "(`recall release unpin`, then `recall release promote VERSION`)"
        )
        log.warning(message)
        return message
    members = parse_fleet(settings.fleet)
    canary = pick_canary(members, settings.fleet_canary)
    report = ship(store, version, members, canary, promote=held is None, settings=settings)
    message = (
        f"shipped index {version} to {len(members)} servers (canary {', '.join(canary)}) "
        f"in {report.seconds:.1f} s"
    )
    log.info(message)
    return message
