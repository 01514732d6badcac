"""A project-local Redis server (Debian's ``redis-server``) for the demo, `make serve` and
the integration tests: loopback only, data and logs under one directory, stopped by us.

Only the project's own server is ever reused or stopped. A server is this project's when
``CONFIG GET dir`` names our directory (Redis reports its working directory, which we set
with ``--dir``), or, should Redis not report it, when our pid file in that directory holds
the pid ``INFO server`` reports. Anything else on the port (another checkout's Redis, a
Redis whose data directory was deleted, something that is not Redis) is a ``ForeignRedis``
error naming the port and what answers there.

Durability when ``persist``: append-only file with ``appendfsync everysec`` (Redis's own
guarantee: at most about one second of writes lost on a crash or ``kill -9``) plus an RDB
snapshot every hour and on shutdown.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

AOF_DIR_NAME = "appendonlydir"
"""Redis 7's multi-part append-only file directory, inside the data directory."""


class LocalRedisError(RuntimeError):
    """Base of the errors the CLI prints as one line (``recall_cli.output.friendly_errors``)."""


class RedisNotInstalled(LocalRedisError):
    """``redis-server`` is not on PATH."""


class ForeignRedis(LocalRedisError):
    """Something that is not this project's Redis listens on the port."""


class RedisStopFailed(LocalRedisError):
    """Our Redis refused or failed to shut down (it still runs)."""


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisNotInstalled(
            "redis-server is not installed; run `make redis-install` "
            "(apt-get install redis-server, needs root) or install it yourself"
        )
    return path


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class PortOccupant:
    """What answers on a loopback port, as far as one probe can tell.

    ``is_redis``: it speaks the Redis protocol (possibly refusing us, e.g. NOAUTH).
    ``dir``: its ``CONFIG GET dir`` ("" when its data directory was deleted; None when it
    did not say). ``error``: why it could not be asked (password required, not Redis, …).
    """

    port: int
    is_redis: bool
    dir: str | None = None
    version: str | None = None
    pid: int | None = None
    error: str | None = None

    def describe(self) -> str:
        """What answers on the port, for people: "a Redis (dir /x, redis 7.0.15, pid 9)"."""
        if not self.is_redis:
            return f"something that is not Redis ({self.error or 'no Redis reply'})"
        facts = []
        if self.dir == "":
            facts.append("its data directory was deleted")
        elif self.dir is not None:
            facts.append(f"dir {self.dir}")
        if self.version:
            facts.append(f"redis {self.version}")
        if self.pid:
            facts.append(f"pid {self.pid}")
        if self.error:
            facts.append(self.error)
        return "a Redis (" + ", ".join(facts or ["no details"]) + ")"


def is_own_server(occupant: PortOccupant, directory: Path, pidfile_pid: int | None) -> bool:
    """The ownership rule: a Redis whose working directory is ``directory`` (compared after
    resolving symlinks), or whose pid is the one in our pid file when it reports no dir."""
    if not occupant.is_redis or occupant.error is not None:
        return False
    if occupant.dir:
        return os.path.realpath(occupant.dir) == os.path.realpath(directory)
    return occupant.dir is None and pidfile_pid is not None and occupant.pid == pidfile_pid


def _client(port: int, timeout_s: float) -> redis.Redis:
    # No client-side retries: redis-py's default (10, with backoff) makes a call to a
    # stopped server take seconds, which would slow every start and stop.
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def probe_port(port: int, timeout_s: float = 1.0) -> PortOccupant | None:
    """What answers on 127.0.0.1:``port``, or None when nothing accepts connections."""
    if not port_in_use(port):
        return None
    client = _client(port, timeout_s)
    try:
        try:
            info = client.info("server")
        except redis.AuthenticationError as exc:
            return PortOccupant(port, True, error=f"requires a password: {exc}")
        except redis.ResponseError as exc:
            # NOAUTH and friends are replies: it is a Redis, one that refuses us.
            return PortOccupant(port, True, error=str(exc))
        except redis.ConnectionError as exc:
            if not port_in_use(port):
                return None  # it went away between the two looks
            return PortOccupant(port, False, error=str(exc))
        except (redis.RedisError, OSError) as exc:
            return PortOccupant(port, False, error=str(exc))
        version = str(info.get("redis_version", "")) or None
        pid = int(info["process_id"]) if "process_id" in info else None
        try:
            reply = client.config_get("dir")
            directory: str | None = str(reply.get("dir", "")) if reply else None
        except redis.ResponseError:
            directory = None  # CONFIG renamed or not allowed for this user
        return PortOccupant(port, True, dir=directory, version=version, pid=pid)
    finally:
        client.close()


class LocalRedis:
    """One ``redis-server`` on 127.0.0.1:``port`` with its files under ``directory``."""

    def __init__(self, directory: Path, port: int, persist: bool = True) -> None:
        self.directory = directory
        self.port = port
        # persist: append-only file (fsync every second) + RDB snapshots, reloaded on start,
        # so user vectors survive `make demo` → `make serve` and a crash. Tests turn it off.
        self.persist = persist
        self.pidfile = directory / "redis.pid"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        client = _client(self.port, 0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _pidfile_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def occupant(self) -> PortOccupant | None:
        """What answers on our port (None: nothing)."""
        return probe_port(self.port)

    def owns(self, occupant: PortOccupant) -> bool:
        return is_own_server(occupant, self.directory, self._pidfile_pid())

    def _foreign(self, occupant: PortOccupant, doing: str) -> ForeignRedis:
        return ForeignRedis(
            f"{doing}: port {self.port} is answered by {occupant.describe()}, which is not "
            f"this project's Redis (data in {self.directory.resolve()}). Stop that server "
            f"yourself (e.g. `redis-cli -p {self.port} shutdown`) or choose another port "
            "with RECALL_REDIS_PORT."
        )

    def start(self, timeout_s: float = 10.0) -> bool:
        """Start the server unless ours already runs. Returns True if started.

        Raises:
            ForeignRedis: something else answers on the port.
            RedisNotInstalled: no ``redis-server`` on PATH.
        """
        occupant = self.occupant()
        if occupant is not None:
            if self.owns(occupant):
                return False
            raise self._foreign(occupant, "cannot start Redis")
        self.directory.mkdir(parents=True, exist_ok=True)
        # Redis 7 started with --appendonly yes but no AOF yet ignores an existing dump.rdb
        # and starts empty. So a data directory without an AOF (new, or from before AOF was
        # on) starts from its RDB and turns AOF on afterwards, which writes the AOF from
        # what was loaded.
        has_aof = (self.directory / AOF_DIR_NAME).is_dir()
        subprocess.run(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory.resolve()),
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pidfile.resolve()),
                "--logfile",
                "redis.log",
                "--save",
                "3600 1" if self.persist else "",
                "--appendonly",
                "yes" if self.persist and has_aof else "no",
                "--appendfsync",
                "everysec",
                # Evicting user vectors would silently turn users into fallbacks.
                "--maxmemory-policy",
                "noeviction",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ping():
                if self.persist and not has_aof:
                    self._enable_aof(deadline)
                return True
            time.sleep(0.05)
        raise LocalRedisError(
            f"redis-server did not answer on port {self.port}; see {self.directory}/redis.log"
        )

    def _enable_aof(self, deadline: float) -> None:
        client = _client(self.port, 5.0)
        try:
            client.config_set("appendonly", "yes")
            while time.monotonic() < deadline:
                info = client.info("persistence")
                busy = ("aof_rewrite_in_progress", "aof_rewrite_scheduled")
                if not any(int(info.get(field, 0)) for field in busy):
                    return
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, *, save: bool | None = None, timeout_s: float = 10.0) -> bool:
        """Shut our server down; returns False when nothing was running.

        ``save`` (default: ``persist``): write the RDB snapshot first. Without it the AOF
        (when on) is still flushed and fsynced by Redis.

        Raises:
            ForeignRedis: the server on the port is not ours (it is left running).
            RedisStopFailed: ours refused (e.g. it cannot write its snapshot) or hangs.
        """
        occupant = self.occupant()
        if occupant is None:
            return False
        if not self.owns(occupant):
            raise self._foreign(occupant, "refusing to stop Redis")
        save = self.persist if save is None else save
        client = _client(self.port, timeout_s)
        try:
            client.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass  # shutdown closes the connection
        except redis.RedisError as exc:
            raise RedisStopFailed(
                f"Redis on port {self.port} did not shut down: {exc} "
                f"(see {self.directory.resolve() / 'redis.log'}); it is still running. "
                + (
                    "`recall redis stop --no-save` stops it without writing the snapshot "
                    "(the append-only file keeps writes up to the last second)."
                    if save
                    else ""
                )
            ) from None
        finally:
            client.close()
        deadline = time.monotonic() + timeout_s
        while port_in_use(self.port):
            if time.monotonic() > deadline:
                raise RedisStopFailed(
                    f"Redis on port {self.port} still answers {timeout_s:.0f} s after SHUTDOWN"
                )
            time.sleep(0.05)
        return True
