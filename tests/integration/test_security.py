"""Transport security and authentication against real servers: TLS and mTLS handshakes
with certificates made at test time, the admin and service bearer tokens, the CLI over
TLS with a token, and Redis with a password (requirepass) and with TLS (rediss://)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyspace.connection import RedisSecurity, redis_kwargs
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.config import ServerSettings
from serving.user_vectors import load_user_vectors
from tests.integration.certs import Pki, make_ca, make_pki
from tests.integration.harness import RECALL, ServerThread, local_settings
from tests.integration.synthetic_index import SyntheticIndex, publish_synthetic

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-s3cret-token"
SERVICE_TOKEN = "ranker-token-1"


@pytest.fixture(scope="module")
def synth(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> SyntheticIndex:
    return publish_synthetic(tmp_path_factory.mktemp("synth"), redis_server.url)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "admin-token").write_text(f"# rotated 2026-01-01\n{ADMIN_TOKEN}\n")
    (directory / "service-token").write_text(SERVICE_TOKEN + "\n")
    return directory


def settings(synth: SyntheticIndex, redis_url: str, **extra: Any) -> ServerSettings:
    return local_settings(
        synth.artifact_root, redis_url, **{"vector_repair_interval_s": 0, **extra}
    )


def tls_channel(port: int, pki: Pki, *, client_cert: bool = False) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(),
        pki.client.key.read_bytes() if client_cert else None,
        pki.client.cert.read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def tls_server(
    synth: SyntheticIndex, redis_server: LocalRedis, pki: Pki, secrets_dir: Path
) -> Iterator[Any]:
    """TLS on both ports (no client certificates), admin token required."""
    with ServerThread(
        settings(
            synth,
            redis_server.url,
            tls_cert_file=str(pki.server.cert),
            tls_key_file=str(pki.server.key),
            admin_token_file=str(secrets_dir / "admin-token"),
        )
    ) as server:
        yield server


def test_tls_handshake_serves_recall_and_the_admin_token_is_enforced(
    tls_server: Any, pki: Pki, synth: SyntheticIndex
) -> None:
    with tls_channel(tls_server.port, pki) as channel:
        reply = recall_pb2_grpc.RecallServiceStub(channel).Recall(
            recall_pb2.RecallRequest(user_id=synth.user_ids[0], k=5), timeout=10
        )
        assert reply.source == recall_pb2.SOURCE_USER_VECTOR and len(reply.candidates) == 5
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with tls_channel(tls_server.admin_port, pki) as channel:
        admin = recall_pb2_grpc.RecallAdminStub(channel)
        status = recall_pb2.GetStatusRequest()
        code, message = code_of(lambda: admin.GetStatus(status, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer" in message
        code, message = code_of(
            lambda: admin.GetStatus(status, timeout=5, metadata=bearer("not-the-token"))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED and message
        code, _ = code_of(
            lambda: admin.GetStatus(
                status, timeout=5, metadata=(("authorization", f"Basic {ADMIN_TOKEN}"),)
            )
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = code_of(lambda: admin.LoadIndex(recall_pb2.LoadIndexRequest(), timeout=30))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        ok = admin.GetStatus(status, timeout=5, metadata=bearer(ADMIN_TOKEN))
        assert ok.index_version == synth.index.index_version
        loaded = admin.LoadIndex(
            recall_pb2.LoadIndexRequest(version=synth.index.index_version),
            timeout=60,
            metadata=bearer(ADMIN_TOKEN),
        )
        assert loaded.index_version == synth.index.index_version
        # Health stays open on the admin port too (probes carry no token).
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_or_untrusting_clients_fail_against_a_tls_server(
    tls_server: Any, tmp_path: Path
) -> None:
    request = recall_pb2.RecallRequest(user_id="u1", k=5)
    with grpc.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        code, _ = code_of(
            lambda: recall_pb2_grpc.RecallServiceStub(channel).Recall(request, timeout=5)
        )
        assert code == grpc.StatusCode.UNAVAILABLE
    other_ca, _, _ = make_ca(tmp_path, "some other CA")
    credentials = grpc.ssl_channel_credentials(other_ca.cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{tls_server.port}", credentials) as channel:
        code, _ = code_of(
            lambda: recall_pb2_grpc.RecallServiceStub(channel).Recall(request, timeout=5)
        )
        assert code == grpc.StatusCode.UNAVAILABLE


def test_a_rotated_admin_token_takes_effect_without_a_restart(
    synth: SyntheticIndex, redis_server: LocalRedis, pki: Pki, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("old-token\n")
    with (
        ServerThread(settings(synth, redis_server.url, admin_token_file=str(token_file))) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.admin_port}") as channel,
    ):
        admin = recall_pb2_grpc.RecallAdminStub(channel)
        status = recall_pb2.GetStatusRequest()
        admin.GetStatus(status, timeout=5, metadata=bearer("old-token"))
        token_file.write_text("new-token\nold-token\n")  # overlap while clients move
        time.sleep(1.2)
        admin.GetStatus(status, timeout=5, metadata=bearer("new-token"))
        admin.GetStatus(status, timeout=5, metadata=bearer("old-token"))
        token_file.write_text("new-token\n")
        time.sleep(1.2)
        code, _ = code_of(lambda: admin.GetStatus(status, timeout=5, metadata=bearer("old-token")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        admin.GetStatus(status, timeout=5, metadata=bearer("new-token"))


def test_mtls_requires_a_client_certificate_which_also_admits_admin_calls(
    synth: SyntheticIndex, redis_server: LocalRedis, pki: Pki, secrets_dir: Path
) -> None:
    with ServerThread(
        settings(
            synth,
            redis_server.url,
            tls_cert_file=str(pki.server.cert),
            tls_key_file=str(pki.server.key),
            tls_client_ca_file=str(pki.ca),
            admin_token_file=str(secrets_dir / "admin-token"),
        )
    ) as server:
        request = recall_pb2.RecallRequest(user_id=synth.user_ids[1], k=3)
        with tls_channel(server.port, pki) as channel:  # TLS, but no client certificate
            code, _ = code_of(
                lambda: recall_pb2_grpc.RecallServiceStub(channel).Recall(request, timeout=5)
            )
            assert code == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, pki, client_cert=True) as channel:
            reply = recall_pb2_grpc.RecallServiceStub(channel).Recall(request, timeout=10)
            assert reply.source == recall_pb2.SOURCE_USER_VECTOR
        with tls_channel(server.admin_port, pki, client_cert=True) as channel:
            admin = recall_pb2_grpc.RecallAdminStub(channel)
            status = admin.GetStatus(recall_pb2.GetStatusRequest(), timeout=5)
            assert status.index_version == synth.index.index_version
            code, _ = code_of(
                lambda: admin.GetStatus(
                    recall_pb2.GetStatusRequest(), timeout=5, metadata=bearer("wrong")
                )
            )
            assert code == grpc.StatusCode.PERMISSION_DENIED


def test_the_service_token_guards_recall_service_but_not_health(
    synth: SyntheticIndex, redis_server: LocalRedis, secrets_dir: Path
) -> None:
    with (
        ServerThread(
            settings(synth, redis_server.url, service_token_file=str(secrets_dir / "service-token"))
        ) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = recall_pb2_grpc.RecallServiceStub(channel)
        request = recall_pb2.RecallRequest(user_id=synth.user_ids[2], k=3)
        code, _ = code_of(lambda: stub.Recall(request, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        batch = recall_pb2.BatchRecallRequest(requests=[request])
        code, _ = code_of(lambda: stub.BatchRecall(batch, timeout=5, metadata=bearer("x")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        reply = stub.Recall(request, timeout=10, metadata=bearer(SERVICE_TOKEN))
        assert len(reply.candidates) == 3
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def run_recall(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECALL, *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_status_and_query_speak_tls_and_tokens(
    tls_server: Any, pki: Pki, secrets_dir: Path, synth: SyntheticIndex
) -> None:
    ports = ["--port", str(tls_server.port), "--admin-port", str(tls_server.admin_port)]
    ok = run_recall(
        [
            "status",
            *ports,
            "--tls-ca",
            str(pki.ca),
            "--token-file",
            str(secrets_dir / "admin-token"),
        ]
    )
    assert ok.returncode == 0, ok.stderr
    assert synth.index.index_version in ok.stdout
    # The same through environment variables (names mirror the server's settings).
    by_env = run_recall(
        ["status", *ports],
        RECALL_TLS_CA_FILE=str(pki.ca),
        RECALL_ADMIN_TOKEN_FILE=str(secrets_dir / "admin-token"),
    )
    assert by_env.returncode == 0, by_env.stderr
    no_token = run_recall(["status", *ports, "--tls-ca", str(pki.ca)])
    assert no_token.returncode == 1
    assert "UNAUTHENTICATED" in no_token.stderr and "Traceback" not in no_token.stderr
    plaintext = run_recall(["status", *ports, "--token-file", str(secrets_dir / "admin-token")])
    assert plaintext.returncode == 1 and "Traceback" not in plaintext.stderr
    missing = run_recall(["status", *ports, "--tls-ca", "/nonexistent/ca.pem"])
    assert missing.returncode == 1 and "/nonexistent/ca.pem" in missing.stderr
    assert "Traceback" not in missing.stderr
    query = run_recall(
        [
            "query",
            "-u",
            synth.user_ids[0],
            "-k",
            "3",
            "--port",
            str(tls_server.port),
            "--tls-ca",
            str(pki.ca),
        ]
    )
    assert query.returncode == 0, query.stderr
    assert "SOURCE_USER_VECTOR" in query.stdout


# ------------------------------------------------------------------ Redis AUTH and TLS
class RedisProcess:
    """Debian's redis-server in the foreground with extra arguments, always stopped."""

    def __init__(self, directory: Path, args: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, client: redis.Redis, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def served_from_vectors(synth: SyntheticIndex, server_settings: ServerSettings) -> bool:
    with (
        ServerThread(server_settings) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        reply = recall_pb2_grpc.RecallServiceStub(channel).Recall(
            recall_pb2.RecallRequest(user_id=synth.user_ids[3], k=5), timeout=10
        )
        return bool(reply.source == recall_pb2.SOURCE_USER_VECTOR)


def test_redis_with_requirepass_serves_user_vectors(synth: SyntheticIndex, tmp_path: Path) -> None:
    password = "redis-pw-for-tests"
    password_file = tmp_path / "redis-password"
    password_file.write_text(password + "\n")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    security = RedisSecurity(password_file=str(password_file))
    process = RedisProcess(tmp_path / "redis", ["--port", str(port), "--requirepass", password])
    try:
        client = redis.Redis.from_url(url, **redis_kwargs(url, security))
        try:
            process.wait_ready(client)
            load_user_vectors(synth.model, client)
            with pytest.raises(redis.AuthenticationError):
                redis.Redis.from_url(url).get("x")  # no password: refused
        finally:
            client.close()
        assert served_from_vectors(
            synth, settings(synth, url, redis_password_file=str(password_file))
        )
        # Without the password the server still answers, marked degraded (never an error).
        with (
            ServerThread(settings(synth, url)) as server,
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            reply = recall_pb2_grpc.RecallServiceStub(channel).Recall(
                recall_pb2.RecallRequest(user_id=synth.user_ids[3], k=5), timeout=10
            )
            assert reply.source != recall_pb2.SOURCE_USER_VECTOR
    finally:
        process.stop()


def test_redis_over_tls_with_a_password_serves_user_vectors(
    synth: SyntheticIndex, pki: Pki, tmp_path: Path
) -> None:
    password = "tls-redis-pw"
    password_file = tmp_path / "redis-password"
    password_file.write_text(password)
    port = free_port()
    url = f"rediss://127.0.0.1:{port}/0"
    process = RedisProcess(
        tmp_path / "redis",
        [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(pki.server.cert),
            "--tls-key-file",
            str(pki.server.key),
            "--tls-ca-cert-file",
            str(pki.ca),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ],
    )
    try:
        security = RedisSecurity(password_file=str(password_file), tls_ca_file=str(pki.ca))
        client = redis.Redis.from_url(url, **redis_kwargs(url, security))
        try:
            process.wait_ready(client)
            load_user_vectors(synth.model, client)
            plain = redis.Redis.from_url(
                f"redis://:{password}@127.0.0.1:{port}/0", socket_timeout=2
            )
            with pytest.raises(redis.ConnectionError):
                plain.ping()  # plaintext against the TLS port
            plain.close()
        finally:
            client.close()
        assert served_from_vectors(
            synth,
            settings(
                synth,
                url,
                redis_password_file=str(password_file),
                redis_tls_ca_file=str(pki.ca),
            ),
        )
    finally:
        process.stop()
