"""The containers' health probe (infra/docker/grpc_health_check.py): which name it expects
when it dials loopback, and when it turns TLS on (pure logic; the handshakes are in
tests/integration/test_tls_clients.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import ipaddress
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROBE = Path(__file__).resolve().parents[2] / "infra" / "docker" / "grpc_health_check.py"


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpc_health_check", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def self_signed(names: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recall")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_cluster_certificate_is_checked_under_its_first_dns_name(probe: ModuleType) -> None:
    pem = self_signed([x509.DNSName("recall-server.recall.svc"), x509.DNSName("recall")])
    assert probe.certificate_name(pem) == "recall-server.recall.svc"


def test_a_certificate_for_loopback_needs_no_override(probe: ModuleType) -> None:
    pem = self_signed([x509.DNSName("recall"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    assert probe.certificate_name(pem) is None
    assert probe.certificate_name(b"not a certificate") is None


def args(**given: object) -> argparse.Namespace:
    values: dict[str, object] = {"tls": False, "ca": None, "cert": None, "key": None}
    values["server_name"] = None
    values.update(given)
    return argparse.Namespace(**values)


def test_plaintext_unless_the_server_has_a_certificate(
    probe: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("RECALL_TLS_CERT_FILE", "RECALL_TLS_CA_FILE", "RECALL_TLS_CLIENT_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RECALL_CLIENT_TLS_CERT_FILE", raising=False)
    monkeypatch.delenv("RECALL_CLIENT_TLS_KEY_FILE", raising=False)
    monkeypatch.delenv("RECALL_TLS_SERVER_NAME", raising=False)
    assert probe.probe_tls(args()) is None
    cert = tmp_path / "tls.crt"
    cert.write_bytes(self_signed([x509.DNSName("recall-server.recall.svc")]))
    monkeypatch.setenv("RECALL_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("RECALL_TLS_KEY_FILE", str(tmp_path / "tls.key"))
    tls = probe.probe_tls(args())
    assert (tls.root_file, tls.cert_file, tls.server_name) == (
        str(cert),
        None,
        "recall-server.recall.svc",
    )
    # mTLS on the server: the probe presents the server's own certificate and key.
    monkeypatch.setenv("RECALL_TLS_CLIENT_CA_FILE", str(tmp_path / "ca.crt"))
    tls = probe.probe_tls(args(server_name="explicit"))
    assert (tls.cert_file, tls.key_file, tls.server_name) == (
        str(cert),
        str(tmp_path / "tls.key"),
        "explicit",
    )
    with pytest.raises(probe.ProbeConfigError, match="needs its key"):
        probe.probe_tls(args(cert="client.crt"))
