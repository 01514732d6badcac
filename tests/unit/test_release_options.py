"""`recall release` takes the same TLS/token options as `recall status|load-index` (each
also from its RECALL_* variable), and they reach the ship's client security."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from recall_cli import release_commands

SECURITY_OPTIONS = {
    "tls": "RECALL_TLS",
    "tls_ca": "RECALL_TLS_CA_FILE",
    "tls_cert": "RECALL_CLIENT_TLS_CERT_FILE",
    "tls_key": "RECALL_CLIENT_TLS_KEY_FILE",
    "tls_server_name": "RECALL_TLS_SERVER_NAME",
    "token_file": "RECALL_ADMIN_TOKEN_FILE",
    "service_token_file": "RECALL_SERVICE_TOKEN_FILE",
}


@pytest.mark.parametrize("command", ["status", "promote", "rollback", "pin", "unpin"])
def test_every_release_command_has_the_security_options(command: str) -> None:
    group: Any = typer.main.get_command(release_commands.release_app)
    params = {p.name: p for p in group.commands[command].params}
    for name, env in SECURITY_OPTIONS.items():
        assert name in params, (command, name)
        assert params[name].envvar == env, (command, name)
    assert "--token-file" in params["token_file"].opts
    assert "--service-token-file" in params["service_token_file"].opts


def test_options_reach_the_fleet_client_security(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in SECURITY_OPTIONS.values():
        monkeypatch.delenv(env, raising=False)
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    admin, service = tmp_path / "admin.token", tmp_path / "service.token"
    admin.write_text("admin-secret\n")
    service.write_text("service-secret\n")
    settings = release_commands._settings(
        "10.0.0.1:50052",
        "1",
        False,
        str(ca),
        str(cert),
        str(key),
        "recall.internal",
        str(admin),
        str(service),
    )
    assert settings.tls_ca_file == str(ca)
    assert (settings.client_tls_cert_file, settings.client_tls_key_file) == (str(cert), str(key))
    assert settings.tls_server_name == "recall.internal"
    security = settings.client_security()
    assert security.admin_token == "admin-secret"
    assert security.token == "service-secret"
    # Nothing given: the environment's settings stay (FleetSettings reads RECALL_*).
    monkeypatch.setenv("RECALL_TLS_SERVER_NAME", "from-env")
    assert release_commands._settings("10.0.0.1:50052", None).tls_server_name == "from-env"
