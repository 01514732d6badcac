"""A model that fails the model gate publishes nothing: the DAG run fails at ``model_gate``,
no user vectors are loaded, no index is built, and neither LATEST pointer moves."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import redis

from artifacts.store import ArtifactStore
from serving.user_vectors import loaded_model_versions
from tests.integration.harness import Pipeline, latest, run_cli


def test_a_model_gate_failure_publishes_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    # A private copy of the store: the rejected model must not show up in other tests' store.
    root = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifact_root, root)
    pipeline = replace(
        pipeline,
        artifact_root=root,
        model_dir=latest(root, "models"),
        index_dir=latest(root, "indexes"),
    )
    store = ArtifactStore(pipeline.artifact_root)
    models_before = store.versions("models")
    indexes_before = store.versions("indexes")
    client = redis.Redis.from_url(pipeline.redis.url)
    try:
        vectors_before = set(loaded_model_versions(client))

        ran = run_cli(
            [
                "pipeline",
                "run",
                "--data",
                str(pipeline.data),
                "--artifact-root",
                str(pipeline.artifact_root),
                "--redis-url",
                pipeline.redis.url,
                "--epochs",
                "1",
                "--min-recall",
                "0.5",
                # No model beats popularity by 10 000 %: the gate must fail.
                "--popularity-margin",
                "100",
            ],
            pipeline.home,
        )
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "failed the model gate, not promoted" in ran.stderr, ran.stderr

        # The trained model is in the store, unpromoted; nothing downstream happened.
        rejected = sorted(set(store.versions("models")) - set(models_before))
        assert len(rejected) == 1
        assert latest(pipeline.artifact_root, "models") == pipeline.model_dir
        assert store.versions("indexes") == indexes_before
        assert latest(pipeline.artifact_root, "indexes") == pipeline.index_dir
        assert set(loaded_model_versions(client)) == vectors_before
        assert rejected[0] not in vectors_before
    finally:
        client.close()

    # The CLI says why, and exits 1, for the same model.
    shown = run_cli(
        [
            "model",
            "gate",
            rejected[0],
            "--artifact-root",
            str(pipeline.artifact_root),
            "--popularity-margin",
            "100",
        ],
        pipeline.home,
    )
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert f"serving model: {pipeline.model_dir.name}" in shown.stdout
    assert "FAIL" in shown.stdout and "failed the model gate" in shown.stderr
