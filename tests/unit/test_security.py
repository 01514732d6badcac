"""Security settings and the pure parts of authentication: settings validation, Redis
connection options, token files (rotation included) and the bearer-token verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from keyspace.connection import RedisConnectionConfigError, RedisSecurity, redis_kwargs
from serving.client import ClientSecurity, read_token
from serving.config import ServerSettings
from serving.security import (
    SecurityConfigError,
    ServicePolicy,
    TokenFile,
    Verdict,
    bearer_token,
    check_token,
    interceptors_for,
    parse_tokens,
    read_pem,
)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    names = ("cert.pem", "key.pem", "ca.pem", "token", "password")
    for name in names:
        (tmp_path / name).write_text("-----BEGIN X-----\nx\n" if name.endswith("pem") else "t\n")
    return {name: str(tmp_path / name) for name in names}


def test_tls_cert_and_key_go_together(files: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="RECALL_TLS_CERT_FILE and RECALL_TLS_KEY_FILE"):
        ServerSettings(tls_cert_file=files["cert.pem"])
    with pytest.raises(ValidationError, match="go together"):
        ServerSettings(tls_key_file=files["key.pem"])
    ok = ServerSettings(tls_cert_file=files["cert.pem"], tls_key_file=files["key.pem"])
    assert ok.tls_cert_file == files["cert.pem"]


def test_client_ca_needs_the_servers_own_certificate(files: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="RECALL_TLS_CLIENT_CA_FILE"):
        ServerSettings(tls_client_ca_file=files["ca.pem"])


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("tls_client_ca_file", "RECALL_TLS_CLIENT_CA_FILE"),
        ("admin_token_file", "RECALL_ADMIN_TOKEN_FILE"),
        ("service_token_file", "RECALL_SERVICE_TOKEN_FILE"),
        ("redis_password_file", "RECALL_REDIS_PASSWORD_FILE"),
        ("redis_tls_ca_file", "RECALL_REDIS_TLS_CA_FILE"),
    ],
)
def test_a_missing_file_is_named_with_its_setting(
    files: dict[str, str], field: str, setting: str
) -> None:
    tls = {"tls_cert_file": files["cert.pem"], "tls_key_file": files["key.pem"]}
    with pytest.raises(ValidationError, match=f"{setting}=/no/such/file: no such file"):
        ServerSettings(**tls, **{field: "/no/such/file"})  # type: ignore[arg-type]


def test_settings_come_from_env_and_metrics_bind_loopback_by_default(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServerSettings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("RECALL_ADMIN_TOKEN_FILE", files["token"])
    monkeypatch.setenv("RECALL_REDIS_PASSWORD_FILE", files["password"])
    monkeypatch.setenv("RECALL_METRICS_HOST", "0.0.0.0")
    settings = ServerSettings()
    assert settings.admin_token_file == files["token"]
    assert settings.metrics_host == "0.0.0.0"
    assert settings.redis_security().password_file == files["password"]


def test_redis_kwargs_password_from_file_env_or_url(files: dict[str, str]) -> None:
    url = "redis://127.0.0.1:6390/0"
    assert redis_kwargs(url, RedisSecurity()) == {}
    assert redis_kwargs(url, RedisSecurity(password_file=files["password"])) == {"password": "t"}
    env = {"RECALL_REDIS_PASSWORD": "pw", "RECALL_REDIS_USERNAME": "recall"}
    assert redis_kwargs(url, RedisSecurity.from_env(env)) == {
        "password": "pw",
        "username": "recall",
    }
    # A password in the URL alone is redis-py's business; with a setting too it is refused.
    assert redis_kwargs("redis://:pw@127.0.0.1:6390/0", RedisSecurity()) == {}
    with pytest.raises(RedisConnectionConfigError, match="keep one"):
        redis_kwargs("redis://:pw@127.0.0.1/0", RedisSecurity(password="other"))


def test_redis_kwargs_password_file_errors_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(RedisConnectionConfigError, match="is empty"):
        redis_kwargs("redis://h/0", RedisSecurity(password_file=str(empty)))
    with pytest.raises(RedisConnectionConfigError, match="cannot read the Redis password"):
        redis_kwargs("redis://h/0", RedisSecurity(password_file=str(tmp_path / "none")))


def test_redis_kwargs_tls_options_only_for_rediss(files: dict[str, str]) -> None:
    with pytest.raises(RedisConnectionConfigError, match="use rediss://"):
        redis_kwargs("redis://h/0", RedisSecurity(tls_ca_file=files["ca.pem"]))
    assert redis_kwargs("rediss://h/0", RedisSecurity(tls_ca_file=files["ca.pem"])) == {
        "ssl_ca_certs": files["ca.pem"]
    }
    both = RedisSecurity(tls_cert_file=files["cert.pem"], tls_key_file=files["key.pem"])
    assert redis_kwargs("rediss://h/0", both) == {
        "ssl_certfile": files["cert.pem"],
        "ssl_keyfile": files["key.pem"],
    }
    with pytest.raises(RedisConnectionConfigError, match="go together"):
        redis_kwargs("rediss://h/0", RedisSecurity(tls_cert_file=files["cert.pem"]))
    with pytest.raises(RedisConnectionConfigError, match="no such file"):
        redis_kwargs("rediss://h/0", RedisSecurity(tls_ca_file="/no/ca.pem"))


def test_token_files_hold_one_token_a_line(tmp_path: Path) -> None:
    assert parse_tokens("# comment\n\n  a \nb\n") == ("a", "b")
    path = tmp_path / "tokens"
    path.write_text("\n# nothing\n")
    with pytest.raises(SecurityConfigError, match="holds no token"):
        TokenFile(str(path))
    with pytest.raises(SecurityConfigError, match="cannot read token file"):
        TokenFile(str(tmp_path / "absent"))
    path.write_text("first\nsecond\n")
    assert read_token(str(path)) == "first"


def test_a_token_file_is_re_read_after_it_changes_and_keeps_the_last_good_tokens(
    tmp_path: Path,
) -> None:
    now = [0.0]
    path = tmp_path / "tokens"
    path.write_text("old\n")
    tokens = TokenFile(str(path), clock=lambda: now[0])
    assert tokens.accepts("old") and not tokens.accepts("new")
    path.write_text("new-one\n")
    now[0] += 0.5  # within the re-check interval: not looked at yet
    assert tokens.accepts("old")
    now[0] += 1.0
    assert tokens.accepts("new-one") and not tokens.accepts("old")
    path.write_text("")  # a half-written rotation does not lock everyone out
    now[0] += 1.0
    assert tokens.accepts("new-one")


def test_bearer_verdicts(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("s3cret\n")
    tokens = TokenFile(str(path))
    assert check_token(None, tokens) is Verdict.MISSING
    assert check_token("Bearer s3cret", tokens) is Verdict.ALLOWED
    assert check_token("bearer  s3cret ", tokens) is Verdict.ALLOWED
    assert check_token("Bearer s3cre", tokens) is Verdict.WRONG
    assert check_token("Basic s3cret", tokens) is Verdict.MALFORMED
    assert check_token("Bearer ", tokens) is Verdict.MALFORMED
    assert bearer_token((("x-other", "1"), ("authorization", b"Bearer t"))) == "Bearer t"
    assert bearer_token(None) is None


def test_open_services_get_no_interceptor(tmp_path: Path) -> None:
    assert interceptors_for({"recall.v1.RecallAdmin": ServicePolicy(None, False)}) == []
    assert len(interceptors_for({"recall.v1.RecallAdmin": ServicePolicy(None, True)})) == 1


def test_client_security_checks_its_files(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="--tls-cert and --tls-key"):
        ClientSecurity(cert_file="c.pem")
    assert ClientSecurity(ca_file="ca.pem").uses_tls and not ClientSecurity().uses_tls
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    with pytest.raises(SecurityConfigError, match="not a PEM file"):
        read_pem(str(not_pem), "TLS CA")
    with pytest.raises(SecurityConfigError, match="cannot read TLS CA"):
        ClientSecurity(ca_file=str(tmp_path / "absent.pem")).channel("127.0.0.1:1")
