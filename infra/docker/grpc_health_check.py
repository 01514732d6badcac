#!/usr/bin/env python3
"""grpc.health.v1 probe for container health checks (grpc_health_probe is not packaged for
PyPI or Debian; this is the same check in a few lines of grpcio, which the images have).

    grpc-health-check                    # exit 0 only if 127.0.0.1:$RECALL_PORT is SERVING
    grpc-health-check --any-answer       # exit 0 on any health answer (liveness: the server
                                         #   is up, even if it waits for its first index)
    grpc-health-check --addr HOST:PORT --service recall.v1.RecallService --timeout 3

Exit 1 with the reason on stderr otherwise.

TLS follows the server's own settings, read from the same environment (the container's),
so the probe needs no configuration of its own:
- TLS is on when RECALL_TLS_CERT_FILE is set (or with --tls). The server's certificate is
  checked against RECALL_TLS_CA_FILE (--ca) when set, else against the server's own
  certificate file (gRPC trusts a certificate listed as a root as it is, so the probe then
  pins exactly the certificate the server presents).
- The name checked is RECALL_TLS_SERVER_NAME (--server-name) when set; else, when the
  server's certificate does not name 127.0.0.1 or localhost, its first DNS name (read with
  the `cryptography` package when installed), since the probe dials loopback.
- mTLS (RECALL_TLS_CLIENT_CA_FILE set): the probe presents RECALL_CLIENT_TLS_CERT_FILE /
  RECALL_CLIENT_TLS_KEY_FILE (--cert/--key) when set, else the server's own certificate and
  key, which the client CA must then have signed for client use too.
Health needs no token (the server leaves grpc.health.v1 open). Without any of these
settings the probe speaks plaintext, as before.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class ProbeConfigError(Exception):
    """A TLS file named by an option or setting cannot be used (message names it)."""


@dataclass(frozen=True)
class ProbeTls:
    """What the probe needs for a TLS channel (paths; None = not used)."""

    root_file: str
    cert_file: str | None
    key_file: str | None
    server_name: str | None


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ProbeConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def certificate_name(pem: bytes) -> str | None:
    """The name to expect when dialling loopback: None when the certificate names 127.0.0.1
    or localhost (or cannot be parsed here), else its first DNS subject alternative name."""
    try:
        from cryptography import x509
    except ImportError:  # not in every image: then RECALL_TLS_SERVER_NAME is the way
        return None
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    dns = [str(name) for name in sans.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    if any(name in LOOPBACK_NAMES for name in dns + ips):
        return None
    return dns[0] if dns else None


def probe_tls(args: argparse.Namespace) -> ProbeTls | None:
    """TLS settings from the options, then the server's environment; None = plaintext."""
    server_cert = _env("RECALL_TLS_CERT_FILE")
    if not (args.tls or args.ca or server_cert):
        return None
    root = args.ca or _env("RECALL_TLS_CA_FILE") or server_cert
    if root is None:
        raise ProbeConfigError("--tls needs --ca (or RECALL_TLS_CA_FILE / RECALL_TLS_CERT_FILE)")
    cert = args.cert or _env("RECALL_CLIENT_TLS_CERT_FILE")
    key = args.key or _env("RECALL_CLIENT_TLS_KEY_FILE")
    if cert is None and key is None and _env("RECALL_TLS_CLIENT_CA_FILE"):
        # mTLS port: present the server's own certificate (see the module docstring).
        cert, key = server_cert, _env("RECALL_TLS_KEY_FILE")
    if bool(cert) != bool(key):
        raise ProbeConfigError("a client certificate needs its key (--cert with --key)")
    name = args.server_name or _env("RECALL_TLS_SERVER_NAME")
    if name is None and server_cert:
        name = certificate_name(_read(server_cert, "TLS certificate"))
    return ProbeTls(root, cert, key, name)


def open_channel(addr: str, tls: ProbeTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(addr)
    credentials = grpc.ssl_channel_credentials(
        _read(tls.root_file, "TLS CA"),
        _read(tls.key_file, "TLS client key") if tls.key_file else None,
        _read(tls.cert_file, "TLS client certificate") if tls.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(addr, credentials, options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--addr", default=f"127.0.0.1:{os.environ.get('RECALL_PORT', '50051')}")
    parser.add_argument("--service", default="", help="health service name ('' = the server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    parser.add_argument("--any-answer", action="store_true", help="NOT_SERVING passes too")
    parser.add_argument("--tls", action="store_true", help="TLS even without RECALL_TLS_*")
    parser.add_argument("--ca", help="PEM CA of the server's certificate")
    parser.add_argument("--cert", help="PEM client certificate (mTLS)")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument("--server-name", help="name expected in the server's certificate")
    args = parser.parse_args(argv)
    try:
        channel = open_channel(args.addr, probe_tls(args))
    except ProbeConfigError as exc:
        print(f"{args.addr}: {exc}", file=sys.stderr)
        return 1
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{args.addr}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if args.any_answer or reply.status == health_pb2.HealthCheckResponse.SERVING:
        return 0
    print(f"{args.addr}: {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
