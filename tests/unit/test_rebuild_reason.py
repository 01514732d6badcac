"""The nightly rebuild's check sees a change of the search tuner's targets (they pick the
served nprobe and refine factor), not only of the factory and the gate minimum."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from artifacts.checksums import MANIFEST_NAME
from artifacts.store import ArtifactStore
from serving import tasks
from serving.index.artifact import publish_index
from serving.index.params import IvfPqParams, SearchTuning
from tests.unit.helpers import write_model_artifact

VERSION = "20261123T073012Z-3f9a1c"


@pytest.fixture
def published(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    model = write_model_artifact(
        tmp_path / "store" / "models" / VERSION, n_items=300, n_users=40, model_version=VERSION
    )
    store.set_latest("models", VERSION)
    publish_index(model, store, index_version="v1", min_recall=0.5, allow_gpu=False)
    return store


def test_tuning_targets_are_recorded_and_a_change_triggers_a_rebuild(
    published: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(published.root)
    manifest = json.loads((published.local_dir("indexes", "v1") / MANIFEST_NAME).read_text())
    assert manifest["search_tuning"]["target_recall"] == SearchTuning().target_recall
    assert tasks.rebuild_reason(root, 0.5) is None  # nothing changed

    real = tasks.choose_params

    def stricter(*args: Any, **kwargs: Any) -> IvfPqParams:
        params = real(*args, **kwargs)
        return dataclasses.replace(params, tuning=SearchTuning(target_recall=0.99))

    monkeypatch.setattr(tasks, "choose_params", stricter)
    reason = tasks.rebuild_reason(root, 0.5)
    assert reason is not None and reason.startswith("search tuning targets changed")
    assert "0.99" in reason


def test_an_older_manifest_without_tuning_is_not_rebuilt_for_it(
    published: ArtifactStore,
) -> None:
    path = published.local_dir("indexes", "v1") / MANIFEST_NAME
    doc = json.loads(path.read_text())
    del doc["search_tuning"]
    path.write_text(json.dumps(doc))
    assert tasks.rebuild_reason(str(published.root), 0.5) is None


def test_turning_fast_scan_on_or_off_triggers_a_rebuild(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    model = write_model_artifact(
        tmp_path / "store" / "models" / VERSION, n_items=1000, n_users=40, model_version=VERSION
    )
    store.set_latest("models", VERSION)
    root = str(store.root)
    publish_index(model, store, index_version="v1", min_recall=0.5, allow_gpu=False)
    assert tasks.rebuild_reason(root, 0.5) is None
    reason = tasks.rebuild_reason(root, 0.5, fast_scan=True)
    assert reason is not None and "x4fs" in reason
    publish_index(model, store, index_version="v2", min_recall=0.5, allow_gpu=False, fast_scan=True)
    assert tasks.rebuild_reason(root, 0.5, fast_scan=True) is None
    assert tasks.rebuild_reason(root, 0.5) is not None
