"""A project-local Redis server (Debian's ``redis-server``) for the demo, `make serve` and
the integration tests: loopback only, data and logs under one directory, stopped by us."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisNotInstalled(RuntimeError):
    """``redis-server`` is not on PATH."""


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


class LocalRedis:
    """One ``redis-server`` on 127.0.0.1:``port`` with its files under ``directory``."""

    def __init__(self, directory: Path, port: int, persist: bool = True) -> None:
        self.directory = directory
        self.port = port
        # persist: snapshot to <directory>/dump.rdb on shutdown, reload on start, so user
        # vectors survive `make demo` → `make serve`. Tests turn it off.
        self.persist = persist
        self.pidfile = directory / "redis.pid"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        # No client-side retries: redis-py's default (10, with backoff) makes a ping of a
        # stopped server take seconds, which would slow every start and stop.
        client = redis.Redis(port=self.port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout_s: float = 10.0) -> bool:
        """Start the server unless one already answers on the port. Returns True if started."""
        if self.ping():
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
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
                "no",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ping():
                return True
            time.sleep(0.05)
        raise RuntimeError(
            f"redis-server did not answer on port {self.port}; see {self.directory}/redis.log"
        )

    def stop(self) -> None:
        """Shut the server down (without saving) if it runs."""
        try:
            client = redis.Redis(port=self.port, socket_timeout=10, retry=Retry(NoBackoff(), 0))
            client.shutdown(save=self.persist, nosave=not self.persist)
        except redis.ConnectionError:
            pass  # shutdown closes the connection, or nothing was running
        deadline = time.monotonic() + 5
        while self.ping() and time.monotonic() < deadline:
            time.sleep(0.05)
