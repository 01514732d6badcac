"""Shared fixtures: a real, throwaway redis-server on a free loopback port."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recall_cli.local_redis import LocalRedis, free_port

# Importing Airflow (the DAG-parsing unit tests do) creates $AIRFLOW_HOME; keep it out of ~.
os.environ.setdefault("AIRFLOW_HOME", os.path.join(tempfile.gettempdir(), "recall-tests-airflow"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """Debian's redis-server, started for this test session and always stopped."""
    server = LocalRedis(Path(tmp_path_factory.mktemp("redis")), free_port(), persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
