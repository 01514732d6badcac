"""How every Redis client of the project connects: password (AUTH/ACL) and TLS options
derived from the URL plus ``RECALL_REDIS_*`` settings, in one place.

Serving, training and the CLI all build clients with ``redis.Redis.from_url(url,
**redis_kwargs(url))`` (or ``redis.asyncio``'s), so a secured Redis needs the same few
settings everywhere:

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
from typing import Any
from urllib.parse import urlsplit

PASSWORD_FILE_ENV = "RECALL_REDIS_PASSWORD_FILE"
PASSWORD_ENV = "RECALL_REDIS_PASSWORD"
USERNAME_ENV = "RECALL_REDIS_USERNAME"
TLS_CA_ENV = "RECALL_REDIS_TLS_CA_FILE"
TLS_CERT_ENV = "RECALL_REDIS_TLS_CERT_FILE"
TLS_KEY_ENV = "RECALL_REDIS_TLS_KEY_FILE"
TLS_SCHEME = "rediss"


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
    """Keyword arguments for ``Redis.from_url(url, **kwargs)`` (sync or asyncio client).

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
    if parts.scheme != TLS_SCHEME:
        if any(tls_files):
            raise RedisConnectionConfigError(
                f"{TLS_CA_ENV}/{TLS_CERT_ENV}/{TLS_KEY_ENV} are set but the Redis URL is "
                f"{parts.scheme}://; use rediss:// for TLS"
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
