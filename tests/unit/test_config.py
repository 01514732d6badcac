"""Server settings: precedence (arguments > RECALL_* env > YAML file > defaults), validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.config import ServerSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "RECALL_CONFIG",
        "RECALL_MAX_K",
        "RECALL_HOME",
        "RECALL_REDIS_PORT",
        "RECALL_REDIS_URL",
        "RECALL_ARTIFACT_ROOT",
        "RECALL_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_follow_recall_home_and_redis_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # recall_settings resolves $RECALL_HOME (default var) as the CLI does: one default.
    assert ServerSettings().artifact_root == os.path.abspath("var/artifacts")
    monkeypatch.setenv("RECALL_HOME", "/srv/recall")
    monkeypatch.setenv("RECALL_REDIS_PORT", "6400")
    settings = ServerSettings()
    assert settings.artifact_root == "/srv/recall/artifacts"
    assert settings.cache_dir == "/srv/recall/cache/artifacts"
    assert settings.redis_url == "redis://127.0.0.1:6400/0"
    assert (settings.port, settings.admin_port, settings.max_k) == (50051, 50052, 1000)


def test_precedence_arguments_over_env_over_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "recall.yaml"
    config.write_text("max_k: 7\nnprobe: 5\nredis_url: redis://10.0.0.1:6379/0\n")
    monkeypatch.setenv("RECALL_CONFIG", str(config))
    assert (load_settings().max_k, load_settings().nprobe) == (7, 5)
    monkeypatch.setenv("RECALL_MAX_K", "9")
    assert load_settings().max_k == 9
    assert load_settings(max_k=3, redis_url=None).max_k == 3
    assert load_settings(redis_url=None).redis_url == "redis://10.0.0.1:6379/0"


def test_unknown_yaml_key_and_bad_values_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "recall.yaml"
    config.write_text("maxk: 7\n")
    monkeypatch.setenv("RECALL_CONFIG", str(config))
    with pytest.raises(ValidationError, match="maxk"):
        load_settings()
    monkeypatch.delenv("RECALL_CONFIG")
    monkeypatch.setenv("RECALL_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        load_settings()
    with pytest.raises(ValidationError, match="max_k"):
        load_settings(max_k=0)
