"""How every Redis client of the project connects: a single Redis or a Redis Cluster, chosen
by the URL, with password (AUTH/ACL) and TLS options derived from the URL plus
``RECALL_REDIS_*`` settings, in one place.

Serving, training and the pipeline tasks build every client with ``make_client(url,
security, asyncio=...)``, so one URL setting (``RECALL_REDIS_URL``, the DAGs' ``redis_url``)
decides everything:

- ``redis://host:port/db`` (``rediss://`` with TLS): one Redis, ``redis.Redis`` /
  ``redis.asyncio.Redis``.
- ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS): a Redis Cluster, reached
  through any one of its nodes; ``redis.RedisCluster`` / ``redis.asyncio.RedisCluster``,
  which learn the slot map from that node and follow MOVED/ASK redirects. Database 0 only
  (a cluster has no other). Callers that batch (pipelines, multi-key reads) ask
  ``is_cluster(client)``: a cluster pipeline is split by node, and a multi-key command must
  not span hash slots.

- ``rediss://host:port/db`` turns TLS on (redis-py's scheme); ``RECALL_REDIS_TLS_CA_FILE``
  names the CA that signed the server's certificate (default: the system's trust store),
  ``RECALL_REDIS_TLS_CERT_FILE``/``RECALL_REDIS_TLS_KEY_FILE`` a client certificate for
  servers that require one (``tls-auth-clients yes``).
- The password comes from ``RECALL_REDIS_PASSWORD_FILE`` (a file holding it, the way
  container secrets are mounted), else ``RECALL_REDIS_PASSWORD``, else the URL
  (``redis://:password@host``). ``RECALL_REDIS_USERNAME`` (or the URL's user) selects an
  ACL user. A password in both the URL and a setting is refused: which one wins would be a
  guess.

TF-free and serving/training-free, like the rest of ``keyspace``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, overload
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException

PASSWORD_FILE_ENV = "RECALL_REDIS_PASSWORD_FILE"
PASSWORD_ENV = "RECALL_REDIS_PASSWORD"
USERNAME_ENV = "RECALL_REDIS_USERNAME"
TLS_CA_ENV = "RECALL_REDIS_TLS_CA_FILE"
TLS_CERT_ENV = "RECALL_REDIS_TLS_CERT_FILE"
TLS_KEY_ENV = "RECALL_REDIS_TLS_KEY_FILE"
TLS_SCHEME = "rediss"
CLUSTER_SCHEMES: dict[str, str] = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that select a Redis Cluster client → the scheme redis-py parses."""
PLAIN_SCHEMES = ("redis", "rediss", "unix")

SyncRedis: TypeAlias = "redis.Redis | redis.RedisCluster"
"""A blocking client of a single Redis or of a Redis Cluster (``make_client``)."""
AsyncRedis: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"
"""An asyncio client of a single Redis or of a Redis Cluster (``make_client(asyncio=True)``)."""

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError)
"""What a Redis call may raise when Redis is unreachable or refuses: redis-py's cluster
client raises ``RedisClusterException`` (not a ``RedisError``) when no node answers, so
``except redis.RedisError`` alone would let a cluster outage escape as a crash."""


class RedisConnectionConfigError(ValueError):
    """The Redis URL and the ``RECALL_REDIS_*`` settings do not fit together (message says
    which setting to change)."""


@dataclass(frozen=True)
class RedisSecurity:
    """Credentials and TLS files for Redis; every field optional (None: not used).

    Paths are read when ``redis_kwargs`` runs, so a rotated password file takes effect on
    the next client made.
    """

    password_file: str | None = None
    password: str | None = None
    username: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RedisSecurity:
        """The settings from ``RECALL_REDIS_*`` environment variables (empty = unset)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(name) or None

        return cls(
            password_file=get(PASSWORD_FILE_ENV),
            password=get(PASSWORD_ENV),
            username=get(USERNAME_ENV),
            tls_ca_file=get(TLS_CA_ENV),
            tls_cert_file=get(TLS_CERT_ENV),
            tls_key_file=get(TLS_KEY_ENV),
        )


def read_secret_file(path: str, what: str) -> str:
    """The file's content without surrounding whitespace (a trailing newline is common).

    Raises:
        RedisConnectionConfigError: unreadable or empty, naming ``what`` and the path.
    """
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RedisConnectionConfigError(
            f"cannot read {what} from {path}: {exc.strerror or exc}"
        ) from None
    if not secret:
        raise RedisConnectionConfigError(f"{what} file {path} is empty")
    return secret


def _existing(path: str, setting: str) -> str:
    if not Path(path).is_file():
        raise RedisConnectionConfigError(f"{setting}={path}: no such file")
    return path


def redis_kwargs(url: str, security: RedisSecurity | None = None) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url(url, **kwargs)`` (sync or asyncio client,
    single or cluster; ``make_client`` applies them).

    ``security`` None: read from the environment (``RedisSecurity.from_env()``).
    Returns only what applies: ``password``/``username`` when a setting gives them, and
    ``ssl_*`` options only for ``rediss://`` URLs (plain connections reject them).

    Raises:
        RedisConnectionConfigError: a password in both the URL and a setting; a password
            file that cannot be read; TLS files set for a ``redis://`` URL; a certificate
            without its key; a named file that does not exist.
    """
    security = RedisSecurity.from_env() if security is None else security
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {}
    if security.password_file:
        kwargs["password"] = read_secret_file(security.password_file, "the Redis password")
    elif security.password:
        kwargs["password"] = security.password
    if "password" in kwargs and parts.password:
        raise RedisConnectionConfigError(
            f"the Redis URL carries a password and {PASSWORD_FILE_ENV}/{PASSWORD_ENV} "
            "gives another; keep one (the file is the safer place)"
        )
    if security.username and not parts.username:
        kwargs["username"] = security.username

    tls_files = (security.tls_ca_file, security.tls_cert_file, security.tls_key_file)
    if CLUSTER_SCHEMES.get(parts.scheme, parts.scheme) != TLS_SCHEME:
        if any(tls_files):
            raise RedisConnectionConfigError(
                f"{TLS_CA_ENV}/{TLS_CERT_ENV}/{TLS_KEY_ENV} are set but the Redis URL is "
                f"{parts.scheme}://; use rediss:// (rediss+cluster:// for a cluster) for TLS"
            )
        return kwargs
    if bool(security.tls_cert_file) != bool(security.tls_key_file):
        raise RedisConnectionConfigError(
            f"{TLS_CERT_ENV} and {TLS_KEY_ENV} go together (a client certificate needs its key)"
        )
    if security.tls_ca_file:
        kwargs["ssl_ca_certs"] = _existing(security.tls_ca_file, TLS_CA_ENV)
    if security.tls_cert_file and security.tls_key_file:
        kwargs["ssl_certfile"] = _existing(security.tls_cert_file, TLS_CERT_ENV)
        kwargs["ssl_keyfile"] = _existing(security.tls_key_file, TLS_KEY_ENV)
    return kwargs


@dataclass(frozen=True)
class RedisEndpoint:
    """A parsed Redis URL: ``url`` is what redis-py's ``from_url`` accepts (``redis://``,
    ``rediss://`` or ``unix://``; the ``+cluster`` marker removed), ``cluster`` says which
    client class reads it."""

    url: str
    cluster: bool


def parse_redis_url(url: str) -> RedisEndpoint:
    """Split the cluster marker off ``url`` (see the module docstring).

    Raises:
        RedisConnectionConfigError: an unknown scheme; a cluster URL without a host or
            naming a database other than 0.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in PLAIN_SCHEMES:
        return RedisEndpoint(url, cluster=False)
    if scheme not in CLUSTER_SCHEMES:
        known = ", ".join(f"{s}://" for s in (*PLAIN_SCHEMES, *CLUSTER_SCHEMES))
        raise RedisConnectionConfigError(
            f"Redis URL {_redacted(url)}: unknown scheme {parts.scheme or '(none)'}://; "
            f"use one of {known}"
        )
    if not parts.hostname:
        raise RedisConnectionConfigError(
            f"Redis URL {_redacted(url)}: a cluster URL names one of its nodes "
            "(redis+cluster://host:port)"
        )
    if parts.path.strip("/") not in ("", "0"):
        raise RedisConnectionConfigError(
            f"Redis URL {_redacted(url)}: a Redis Cluster has only database 0; drop "
            f"{parts.path!r} from the URL"
        )
    base = urlunsplit((CLUSTER_SCHEMES[scheme], parts.netloc, "", parts.query, ""))
    return RedisEndpoint(base, cluster=True)


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (error messages end up in logs)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (sync or asyncio) made by ``make_client``."""
    return isinstance(client, redis.RedisCluster | aioredis.RedisCluster)


@overload
def make_client(
    url: str,
    security: RedisSecurity | None = None,
    *,
    asyncio: Literal[False] = False,
    **options: Any,
) -> SyncRedis: ...


@overload
def make_client(
    url: str, security: RedisSecurity | None = None, *, asyncio: Literal[True], **options: Any
) -> AsyncRedis: ...


def make_client(
    url: str, security: RedisSecurity | None = None, *, asyncio: bool = False, **options: Any
) -> SyncRedis | AsyncRedis:
    """The one way the project makes a Redis client.

    ``url``: ``redis[s]://`` for one Redis, ``redis[s]+cluster://`` for a Redis Cluster
    (any node). ``security``: password/TLS settings (None: ``RECALL_REDIS_*`` from the
    environment; applied through ``redis_kwargs``). ``asyncio``: a ``redis.asyncio``
    client instead of a blocking one. ``options``: connection options both client kinds
    take (``socket_timeout`` in seconds, ``socket_connect_timeout``,
    ``health_check_interval``, ``retry``: a ``redis.asyncio.retry.Retry`` for asyncio,
    ``redis.retry.Retry`` otherwise; on a cluster it is how often a command is retried
    after a connection error or timeout, with the slot map reloaded in between).

    An asyncio cluster client connects on its first command; a blocking one at once (it
    loads the slot map), so an unreachable cluster fails here.

    Raises:
        RedisConnectionConfigError: the URL or the security settings are wrong.
        redis.ConnectionError: a blocking cluster client cannot reach any node.
    """
    endpoint = parse_redis_url(url)
    kwargs = {**options, **redis_kwargs(url, security)}
    if asyncio:
        if endpoint.cluster:
            return aioredis.RedisCluster.from_url(endpoint.url, **kwargs)
        return aioredis.Redis.from_url(endpoint.url, **kwargs)
    if endpoint.cluster:
        try:
            return redis.RedisCluster.from_url(endpoint.url, **kwargs)
        except RedisClusterException as exc:
            raise redis.ConnectionError(
                f"Redis Cluster {_redacted(url)} cannot be reached: {exc}"
            ) from exc
    return redis.Redis.from_url(endpoint.url, **kwargs)
