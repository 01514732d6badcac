"""Entry points the training DAG task and `recall train` call: data dir in, model URI out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from artifacts.signing import signer_from_env
from artifacts.store import ArtifactStore, new_version
from training.config import read_train_config
from training.data.schema import load_dataset
from training.export import publish_model
from training.train import EpochCallback, train_two_tower

log = logging.getLogger(__name__)


def train(
    data_dir: str | Path,
    artifact_root: str,
    config: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    config_file: str | Path | None = None,
    *,
    promote: bool = True,
) -> str:
    """Load ``data_dir``, train the towers, publish the model artifact. Returns its URI.

    ``config_file`` (YAML, optional) holds TrainConfig fields, the feature spec included;
    ``config`` entries override it. ``promote``: move ``models/LATEST`` to the new model;
    without it the model is published unpromoted, for the model gate
    (``artifacts.model_gate.gate_and_promote``) to promote. With
    ``$RECALL_SIGNING_KEY_FILE`` set, the manifest is signed with that key.

    Raises:
        DataFormatError: the data directory breaks the format (message says how).
        pydantic.ValidationError: an unknown or out-of-range hyper-parameter.
    """
    train_config = read_train_config(Path(config_file) if config_file else None, config)
    signer = signer_from_env()  # before training: a bad key path fails in seconds, not hours
    dataset = load_dataset(data_dir)
    model = train_two_tower(dataset, train_config, on_epoch=on_epoch)
    version = new_version()
    store = ArtifactStore(artifact_root, signer=signer)
    uri = publish_model(model, train_config, store, version, str(data_dir), set_latest=promote)
    log.info(
        "model %s published at %s%s; metrics %s",
        version,
        uri,
        "" if promote else " (not promoted: models/LATEST unchanged)",
        model.metrics,
    )
    return uri
