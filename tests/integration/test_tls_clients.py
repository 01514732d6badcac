"""Clients of a TLS server beyond `recall query/status`: `recall interactions add` with TLS,
mTLS and the service token, and the containers' health probe
(infra/docker/grpc_health_check.py) configured by the server's own RECALL_TLS_* settings.
Certificates are made at test time (tests/integration/certs.py); servers and Redis are real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from keyspace.histories import history_key
from recall_cli.local_redis import LocalRedis
from serving.config import ServerSettings
from tests.integration.certs import Pki, make_pki
from tests.integration.harness import RECALL, ServerThread, local_settings
from tests.integration.synthetic_index import SyntheticIndex, publish_synthetic

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "ranker-token-7"
PROBE = Path(__file__).resolve().parents[2] / "infra" / "docker" / "grpc_health_check.py"
# Settings a developer's shell may carry that would change what the probe or CLI does.
SCRUBBED = (
    "RECALL_TLS_CERT_FILE",
    "RECALL_TLS_KEY_FILE",
    "RECALL_TLS_CLIENT_CA_FILE",
    "RECALL_TLS_CA_FILE",
    "RECALL_TLS_SERVER_NAME",
    "RECALL_CLIENT_TLS_CERT_FILE",
    "RECALL_CLIENT_TLS_KEY_FILE",
    "RECALL_SERVICE_TOKEN_FILE",
    "RECALL_TLS",
)


@pytest.fixture(scope="module")
def synth(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> SyntheticIndex:
    return publish_synthetic(tmp_path_factory.mktemp("synth"), redis_server.url)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "service-token"
    path.write_text(SERVICE_TOKEN + "\n")
    return path


def settings(synth: SyntheticIndex, redis_url: str, **extra: Any) -> ServerSettings:
    return local_settings(
        synth.artifact_root, redis_url, **{"vector_repair_interval_s": 0, **extra}
    )


@pytest.fixture(scope="module")
def tls_server(
    synth: SyntheticIndex, redis_server: LocalRedis, pki: Pki, token_file: Path
) -> Iterator[Any]:
    """TLS without client certificates; RecallService requires the service token."""
    config = settings(
        synth,
        redis_server.url,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        service_token_file=str(token_file),
    )
    with ServerThread(config) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(synth: SyntheticIndex, redis_server: LocalRedis, pki: Pki) -> Iterator[Any]:
    config = settings(
        synth,
        redis_server.url,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca),
    )
    with ServerThread(config) as server:
        yield server


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return {**env, "COLUMNS": "200", **extra}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=clean_env(**env), capture_output=True, text=True, timeout=120)


def probe(port: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(PROBE), "--addr", f"127.0.0.1:{port}", *args], **env)


def history(redis_url: str, user: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.lrange(history_key(user), 0, -1))
    finally:
        client.close()


# ------------------------------------------------------------------ recall interactions add
def test_interactions_add_speaks_tls_with_the_service_token(
    tls_server: Any, pki: Pki, token_file: Path, redis_server: LocalRedis
) -> None:
    add = [*RECALL, "interactions", "add", "tls-user-1", "i3", "i4", "--port", str(tls_server.port)]
    ok = run([*add, "--tls-ca", str(pki.ca), "--token-file", str(token_file)])
    assert ok.returncode == 0, ok.stderr
    assert "recorded 2 interaction(s)" in ok.stdout
    assert {b"i3", b"i4"} <= set(history(redis_server.url, "tls-user-1"))
    # The same through the environment (the names the server reads).
    by_env = run(add, RECALL_TLS_CA_FILE=str(pki.ca), RECALL_SERVICE_TOKEN_FILE=str(token_file))
    assert by_env.returncode == 0, by_env.stderr
    no_token = run([*add, "--tls-ca", str(pki.ca)])
    assert no_token.returncode == 1
    assert "UNAUTHENTICATED" in no_token.stderr and "Traceback" not in no_token.stderr
    plaintext = run([*add, "--token-file", str(token_file)])
    assert plaintext.returncode == 1 and "Traceback" not in plaintext.stderr
    missing = run([*add, "--tls-ca", "/nonexistent/ca.pem"])
    assert missing.returncode == 1 and "/nonexistent/ca.pem" in missing.stderr


def test_interactions_add_presents_a_client_certificate_under_mtls(
    mtls_server: Any, pki: Pki, redis_server: LocalRedis
) -> None:
    add = [*RECALL, "interactions", "add", "mtls-user-1", "i5", "--port", str(mtls_server.port)]
    client = ["--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key)]
    ok = run([*add, "--tls-ca", str(pki.ca), *client])
    assert ok.returncode == 0, ok.stderr
    assert b"i5" in history(redis_server.url, "mtls-user-1")
    no_cert = run([*add, "--tls-ca", str(pki.ca)])
    assert no_cert.returncode == 1 and "Traceback" not in no_cert.stderr


# ------------------------------------------------------------------ the containers' probe
def test_probe_plaintext_is_unchanged(synth: SyntheticIndex, redis_server: LocalRedis) -> None:
    with ServerThread(settings(synth, redis_server.url)) as server:
        assert probe(server.port).returncode == 0
        # The default address comes from RECALL_PORT, as in the image's HEALTHCHECK.
        default = run([sys.executable, str(PROBE)], RECALL_PORT=str(server.port))
        assert default.returncode == 0, default.stderr


def test_probe_follows_the_servers_tls_settings(tls_server: Any, pki: Pki) -> None:
    server_env = {"RECALL_TLS_CERT_FILE": str(pki.server.cert)}
    server_env["RECALL_TLS_KEY_FILE"] = str(pki.server.key)
    ok = probe(tls_server.port, RECALL_TLS_CA_FILE=str(pki.ca), **server_env)
    assert ok.returncode == 0, ok.stderr
    assert probe(tls_server.port, "--ca", str(pki.ca)).returncode == 0
    # Without a CA setting the server's own certificate is the root (gRPC trusts a listed
    # leaf directly), so a bare container environment is enough.
    pinned = probe(tls_server.port, **server_env)
    assert pinned.returncode == 0, pinned.stderr
    # A root that did not sign the server's certificate is refused.
    other = probe(tls_server.port, "--ca", str(pki.client.cert), **server_env)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    # Plaintext against a TLS port fails with a one-line reason.
    plaintext = probe(tls_server.port)
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr
    missing = probe(tls_server.port, "--ca", "/nonexistent/ca.pem")
    assert missing.returncode == 1 and "/nonexistent/ca.pem" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_probe_presents_a_client_certificate_under_mtls(mtls_server: Any, pki: Pki) -> None:
    server_env = {
        "RECALL_TLS_CERT_FILE": str(pki.server.cert),
        "RECALL_TLS_KEY_FILE": str(pki.server.key),
        "RECALL_TLS_CLIENT_CA_FILE": str(pki.ca),
        "RECALL_TLS_CA_FILE": str(pki.ca),
    }
    ok = probe(
        mtls_server.port,
        RECALL_CLIENT_TLS_CERT_FILE=str(pki.client.cert),
        RECALL_CLIENT_TLS_KEY_FILE=str(pki.client.key),
        **server_env,
    )
    assert ok.returncode == 0, ok.stderr
    assert probe(mtls_server.port, "--ca", str(pki.ca)).returncode == 1  # no certificate


def dual_use_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1 valid for TLS server *and* client auth (what a probe
    that presents the server's own certificate needs); returns (ca, cert, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from tests.integration.certs import make_ca

    ca, ca_cert, ca_key = make_ca(directory, "dual test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recall-server")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "dual.crt", directory / "dual.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.cert, cert_path, key_path


def test_probe_under_mtls_falls_back_to_the_servers_own_certificate(
    synth: SyntheticIndex, redis_server: LocalRedis, tmp_path: Path
) -> None:
    ca, cert, key = dual_use_certificate(tmp_path)
    server_env = {
        "RECALL_TLS_CERT_FILE": str(cert),
        "RECALL_TLS_KEY_FILE": str(key),
        "RECALL_TLS_CLIENT_CA_FILE": str(ca),
        "RECALL_TLS_CA_FILE": str(ca),
    }
    config = settings(
        synth,
        redis_server.url,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_client_ca_file=str(ca),
    )
    with ServerThread(config) as server:
        ok = probe(server.port, **server_env)
        assert ok.returncode == 0, ok.stderr
        # Without the mTLS setting the probe presents nothing, and the handshake fails.
        del server_env["RECALL_TLS_CLIENT_CA_FILE"]
        assert probe(server.port, **server_env).returncode == 1
