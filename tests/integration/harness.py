"""Helpers shared by the integration tests: the CLI as a subprocess, a pipeline run,
and a RecallServer on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recall_cli.local_redis import LocalRedis
from serving.config import ServerSettings
from serving.server import RecallServer

RECALL = [sys.executable, "-m", "recall_cli.main"]


def run_cli(args: list[str], home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`recall ARGS` with RECALL_HOME=home; output captured (wide, so lines do not wrap)."""
    env = {**os.environ, "RECALL_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*RECALL, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Pipeline:
    """What one `recall pipeline run` on synthetic data left behind."""

    home: Path
    data: Path
    artifact_root: Path
    model_dir: Path
    index_dir: Path
    redis: LocalRedis


def manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "manifest.json").read_text()))


def latest(artifact_root: Path, kind: str) -> Path:
    return artifact_root / kind / (artifact_root / kind / "LATEST").read_text().strip()


def run_pipeline(home: Path, redis: LocalRedis) -> Pipeline:
    data = home / "data" / "synthetic"
    made = run_cli(
        ["data", "synth", str(data), "--users", "300", "--items", "400", "--per-user", "20"], home
    )
    assert made.returncode == 0, made.stderr
    artifacts = home / "artifacts"
    ran = run_cli(
        [
            "pipeline",
            "run",
            "--data",
            str(data),
            "--artifact-root",
            str(artifacts),
            "--redis-url",
            redis.url,
            "--epochs",
            "3",
            "--min-recall",
            "0.5",
            # Three epochs on 300 synthetic users can trail popularity at recall@100: the
            # gate only warns here (tests/integration/test_model_gate.py enforces it).
            "--no-model-gate",
        ],
        home,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return Pipeline(
        home, data, artifacts, latest(artifacts, "models"), latest(artifacts, "indexes"), redis
    )


class ServerThread:
    """A RecallServer on its own event loop in a background thread (ports chosen by the OS)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.server: RecallServer | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RecallServer:
        self.thread.start()
        self.server = RecallServer(self.settings)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        return self.server

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def local_settings(artifact_root: str | Path, redis_url: str, **extra: Any) -> ServerSettings:
    """A test server's settings: OS-chosen ports, no watcher, ``extra`` on top."""
    values: dict[str, Any] = {
        "port": 0,
        "admin_port": 0,
        "metrics_port": 0,
        "redis_url": redis_url,
        "artifact_root": str(artifact_root),
        "watch_interval_s": 0,
    }
    values.update(extra)
    return ServerSettings(**values)


def settings_for(p: Pipeline, **extra: Any) -> ServerSettings:
    """The pipeline's server settings; ``extra`` may override any of them (redis_url too)."""
    values: dict[str, Any] = {"artifact_root": p.artifact_root, "redis_url": p.redis.url}
    values.update(extra)
    return local_settings(**values)


def copy_index_as(index_dir: Path, version: str, *, corrupt: bool = False) -> Path:
    """Publish-by-hand a copy of ``index_dir`` as ``version`` beside it (same store).

    The manifest is rewritten with the new version (it is not in its own file list, so the
    copy verifies); ``corrupt`` flips one byte of index.faiss so verification must fail.
    """
    import shutil

    target = index_dir.parent / version
    shutil.copytree(index_dir, target)
    doc = manifest(target)
    doc["index_version"] = version
    (target / "manifest.json").write_text(json.dumps(doc))
    if corrupt:
        data = bytearray((target / "index.faiss").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / "index.faiss").write_bytes(bytes(data))
    return target


@contextmanager
def refresher_thread(p: Pipeline) -> Iterator[None]:
    """A real refresher (training.refresher with the pipeline's exported towers) on a
    thread, polling every 100 ms; its user tower is loaded before this yields, so no
    test's clock pays for it. Stopped and its Redis client closed on exit."""
    from training.refresher import RefresherSettings, make_refresher  # TensorFlow

    settings = RefresherSettings(
        redis_url=p.redis.url, artifact_root=str(p.artifact_root), refresh_block_ms=100
    )
    worker = make_refresher(settings)
    worker.model.encoder()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        worker.client.close()
