"""Operating the service: the nightly rebuild DAG, hot swap on a new LATEST, Redis outages,
metrics, and `recall serve` as a real process with graceful shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from artifacts.store import ArtifactStore
from recall_cli.local_redis import free_port
from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient
from tests.integration.harness import (
    RECALL,
    Pipeline,
    ServerThread,
    copy_index_as,
    latest,
    manifest,
    run_cli,
    settings_for,
)

pytestmark = pytest.mark.integration


def private_copy(p: Pipeline, tmp_path: Path) -> Pipeline:
    """The pipeline's artifacts copied, so a test may publish without affecting others."""
    root = tmp_path / "artifacts"
    shutil.copytree(p.artifact_root, root)
    return Pipeline(p.home, p.data, root, latest(root, "models"), latest(root, "indexes"), p.redis)


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def a_user(p: Pipeline) -> str:
    import json

    return str(json.loads((p.model_dir / "user_ids.json").read_text())[0])


def test_rebuild_index_dag_rebuilds_only_when_something_changed(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    from pipelines.run_metrics import read_samples

    own = private_copy(pipeline, tmp_path)
    gate = manifest(own.index_dir)["quality"]["min_recall"]

    def rebuild(min_recall: float) -> None:
        ran = run_cli(
            [
                "pipeline",
                "run",
                "--dag-id",
                "recall_rebuild_index",
                "--data",
                str(own.data),
                "--artifact-root",
                str(own.artifact_root),
                "--redis-url",
                own.redis.url,
                "--min-recall",
                str(min_recall),
            ],
            own.home,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr

    # Same model, configuration and gate minimum: the nightly run skips every task.
    rebuild(gate)
    assert latest(own.artifact_root, "indexes") == own.index_dir
    assert ArtifactStore(own.artifact_root).versions("indexes") == [own.index_dir.name]
    # The gate minimum changed: a new index of the LATEST model is published.
    rebuild(round(gate - 0.05, 4))
    new_index = latest(own.artifact_root, "indexes")
    assert new_index.name != own.index_dir.name
    assert manifest(new_index)["model_version"] == own.model_dir.name
    assert ArtifactStore(own.artifact_root).versions("models") == [own.model_dir.name]
    # Each run's outcome is a metric (node_exporter textfile) the staleness alert reads.
    samples = read_samples(own.home / "metrics" / "pipelines.prom")
    key = ("recall_pipeline_runs_total", (("dag", "recall_rebuild_index"), ("outcome", "success")))
    assert samples.get(key) == 2.0
    stamp = ("recall_pipeline_last_success_timestamp_seconds", (("dag", "recall_rebuild_index"),))
    assert samples[stamp] > 0


def test_server_hot_swaps_to_a_new_latest_and_skips_a_corrupt_one(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    own = private_copy(pipeline, tmp_path)
    store = ArtifactStore(own.artifact_root)
    with ServerThread(settings_for(own, watch_interval_s=0.2)) as server:
        client = RecallClient(f"127.0.0.1:{server.port}", f"127.0.0.1:{server.admin_port}")
        try:
            assert client.status().index_version == own.index_dir.name
            fresh = copy_index_as(own.index_dir, "99990101T000000Z-fresh0")
            store.set_latest("indexes", fresh.name)
            assert wait_for(lambda: client.status().index_version == fresh.name)
            assert client.recall(a_user(own), 5).index_version == fresh.name

            failures = (
                REGISTRY.get_sample_value("recall_index_loads_total", {"result": "failure"}) or 0
            )
            broken = copy_index_as(own.index_dir, "99990102T000000Z-broken", corrupt=True)
            store.set_latest("indexes", broken.name)
            assert wait_for(
                lambda: (
                    (
                        REGISTRY.get_sample_value("recall_index_loads_total", {"result": "failure"})
                        or 0
                    )
                    > failures
                )
            )
            time.sleep(0.5)
            assert client.status().index_version == fresh.name
            assert len(client.recall(a_user(own), 5).candidates) == 5
        finally:
            client.close()


def test_redis_outage_is_a_marked_fallback_or_unavailable_not_a_crash(pipeline: Pipeline) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with ServerThread(settings_for(pipeline, redis_url=dead, redis_timeout_s=0.2)) as server:
        client = RecallClient(
            f"127.0.0.1:{server.port}", f"127.0.0.1:{server.admin_port}", retries=0
        )
        try:
            answer = client.recall(a_user(pipeline), 5)  # default: degrade, don't fail
            assert answer.source == recall_pb2.SOURCE_FALLBACK_DEGRADED
            assert answer.degraded_reason == "redis_error"
            assert len(answer.candidates) == 5
            status = client.status()
            assert not status.redis_healthy and status.redis_detail
            assert client.is_serving()  # the index is fine; only lookups fail
        finally:
            client.close()
    strict = settings_for(
        pipeline, redis_url=dead, redis_timeout_s=0.2, redis_failure_mode="unavailable"
    )
    with ServerThread(strict) as server:
        client = RecallClient(f"127.0.0.1:{server.port}", retries=0)
        try:
            with pytest.raises(grpc.RpcError) as info:
                client.recall(a_user(pipeline), 5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "Redis unavailable" in info.value.details()
        finally:
            client.close()


def test_metrics_count_requests_by_method_code_and_source(pipeline: Pipeline) -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    with ServerThread(settings_for(pipeline)) as server:
        client = RecallClient(f"127.0.0.1:{server.port}", retries=0)
        try:
            ok = sample("recall_requests_total", {"method": "Recall", "code": "OK"})
            bad = sample("recall_requests_total", {"method": "Recall", "code": "INVALID_ARGUMENT"})
            fallback = sample("recall_responses_total", {"source": "fallback"})
            client.recall(a_user(pipeline), 3)
            client.recall("nobody-at-all", 3)
            with pytest.raises(grpc.RpcError):
                client.recall("x", 0)
            assert sample("recall_requests_total", {"method": "Recall", "code": "OK"}) == ok + 2
            assert (
                sample("recall_requests_total", {"method": "Recall", "code": "INVALID_ARGUMENT"})
                == bad + 1
            )
            assert sample("recall_responses_total", {"source": "fallback"}) == fallback + 1
            assert sample("recall_index_items", {}) == manifest(pipeline.index_dir)["item_count"]
        finally:
            client.close()


def test_recall_serve_process_serves_exposes_metrics_and_stops_on_sigterm(
    pipeline: Pipeline,
) -> None:
    port, admin_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RECALL_HOME": str(pipeline.home),
        "RECALL_PORT": str(port),
        "RECALL_ADMIN_PORT": str(admin_port),
        "RECALL_METRICS_PORT": str(metrics_port),
        "RECALL_REDIS_URL": pipeline.redis.url,
        "RECALL_ARTIFACT_ROOT": str(pipeline.artifact_root),
        "COLUMNS": "200",
    }
    server = subprocess.Popen(
        [*RECALL, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        client = RecallClient(f"127.0.0.1:{port}")
        assert client.wait_serving(60), "server never became SERVING"
        client.close()
        query = subprocess.run(
            [*RECALL, "query", "-u", a_user(pipeline), "-k", "3", "--data", str(pipeline.data)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert query.returncode == 0, query.stderr
        assert "SOURCE_USER_VECTOR" in query.stdout and "Synthetic item" in query.stdout
        status = subprocess.run(
            [*RECALL, "status"], env=env, capture_output=True, text=True, timeout=60
        )
        assert pipeline.index_dir.name in status.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
        assert 'recall_requests_total{code="OK",method="Recall"}' in body
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_second_server_on_a_busy_port_fails_instead_of_sharing_it(pipeline: Pipeline) -> None:
    import asyncio

    from serving.server import RecallServer

    with ServerThread(settings_for(pipeline)) as running:
        second = RecallServer(settings_for(pipeline, port=running.port))
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{running.port}"):
            asyncio.run(second.start())
