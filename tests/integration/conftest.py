"""One pipeline run per test session, shared by every integration test module."""

from __future__ import annotations

import pytest

from recall_cli.local_redis import LocalRedis
from tests.integration.harness import Pipeline, run_pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Pipeline:
    """Synthetic data → `recall pipeline run` (Airflow dag.test) → artifacts + Redis vectors."""
    return run_pipeline(tmp_path_factory.mktemp("home"), redis_server)
