"""Shared fixtures: a real, throwaway redis-server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recall_cli.local_redis import LocalRedis, free_port

# Importing Airflow (the DAG-parsing unit tests do) creates $AIRFLOW_HOME; keep it out of ~.
os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "recall-tests-airflow"))


REPO_VAR = Path(__file__).resolve().parent.parent / "var"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    """Debian's redis-server on a free loopback port, its files under the project's var/,
    started for this test session and always stopped (and its files removed)."""
    port = free_port()
    directory = REPO_VAR / "test-redis" / str(port)
    server = LocalRedis(directory, port, persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
