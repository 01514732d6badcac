"""Pure parts of serving/workers.py: the host status merge, the port claim, worker settings
(the process tree itself: tests/integration/test_workers.py)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from serving.api.recall.v1 import recall_pb2
from serving.config import ServerSettings
from serving.workers import PortTaken, _fresh_private_dir, claim_port, merge_status, worker_settings


def _status(version: str, failed: int, healthy: bool = True) -> recall_pb2.GetStatusResponse:
    return recall_pb2.GetStatusResponse(
        index_version=version,
        model_version=f"m-{version}",
        item_count=len(version),
        failed_calls=failed,
        redis_healthy=healthy,
        redis_detail="" if healthy else "Connection refused",
    )


def test_merge_sums_failures_and_keeps_the_version_when_workers_agree() -> None:
    own = _status("v2", 1)
    merge_status(own, [_status("v2", 2), _status("v2", 3)])
    assert (own.index_version, own.model_version, own.failed_calls) == ("v2", "m-v2", 6)
    assert own.redis_healthy


def test_merge_reports_a_lagging_worker_and_an_unhealthy_redis() -> None:
    own = _status("v2", 0)
    merge_status(own, [_status("v2", 0), _status("v1", 0, healthy=False)])
    assert (own.index_version, own.model_version, own.item_count) == ("v1", "m-v1", 2)
    assert not own.redis_healthy and own.redis_detail == "Connection refused"
    empty = _status("v2", 0)
    merge_status(empty, [_status("", 0)])
    assert empty.index_version == ""  # a worker without an index: the host has none


def test_claim_port_refuses_a_port_held_even_with_so_reuseport() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PortTaken, match=f"cannot listen on 127.0.0.1:{port}"):
            claim_port("127.0.0.1", port)
    assert claim_port("127.0.0.1", port) == port  # released: free again
    assert claim_port("127.0.0.1", 0) > 0


def test_worker_settings_give_worker_0_the_admin_port_and_each_its_metrics_port() -> None:
    values: dict[str, Any] = {
        "port": 5000,
        "admin_port": 5001,
        "metrics_port": 9100,
        "workers": 3,
        "redis_password": SecretStr("pw"),
    }
    settings = ServerSettings(**values)
    first, third = worker_settings(settings, 0, 5001), worker_settings(settings, 2, 5001)
    assert (first["admin_port"], first["metrics_port"]) == (5001, 9100)
    assert (third["admin_port"], third["metrics_port"]) == (0, 9102)
    assert third["vector_repair_interval_s"] == 0
    assert first["vector_repair_interval_s"] == settings.vector_repair_interval_s
    assert first["redis_password"] == "pw"  # through the pipe in clear, not masked
    assert ServerSettings(**third).workers == 3
    off = ServerSettings(**{**values, "metrics_port": 0, "workers": 2})
    assert worker_settings(off, 1, 1)["metrics_port"] == 0


def test_private_dir_is_fresh_and_0700(tmp_path: Path) -> None:
    target = tmp_path / "recall-workers-1"
    target.mkdir()
    (target / "worker-0.sock").write_text("stale")
    _fresh_private_dir(target)
    assert list(target.iterdir()) == [] and target.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "recall-workers-2"
    link.symlink_to(tmp_path)
    with pytest.raises(FileExistsError):
        _fresh_private_dir(link)
