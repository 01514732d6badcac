"""Entry points the training DAG task and `recall train` call: data dir in, model URI out."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from artifacts.signing import signer_from_env
from artifacts.store import ArtifactStore, new_version
from catalogue.canonical_map import CanonicalMap
from catalogue.config import DuplicateConfig, read_duplicate_config
from catalogue.duplicates import (
    DuplicateInputError,
    drop_aliases,
    find_duplicates,
    merge_interactions,
)
from training.config import read_train_config
from training.data.schema import Dataset, load_dataset
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
    duplicates: dict[str, Any] | None = None,
) -> str:
    """Load ``data_dir``, train the towers, publish the model artifact. Returns its URI.

    ``config_file`` (YAML, optional) holds TrainConfig fields, the feature spec included;
    ``config`` entries override it. ``promote``: move ``models/LATEST`` to the new model;
    without it the model is published unpromoted, for the model gate
    (``artifacts.model_gate.gate_and_promote``) to promote. With
    ``$RECALL_SIGNING_KEY_FILE`` set, the manifest is signed with that key.
    ``duplicates``: DuplicateConfig fields (``catalogue.config``; ``{"enabled": False}``
    turns detection off); duplicate items are merged before training
    (``merge_duplicate_items``) and the map is published as the model's duplicates.json.

    Raises:
        DataFormatError: the data directory breaks the format (message says how).
        pydantic.ValidationError: an unknown or out-of-range hyper-parameter.
    """
    train_config = read_train_config(Path(config_file) if config_file else None, config)
    signer = signer_from_env()  # before training: a bad key path fails in seconds, not hours
    duplicates_config = read_duplicate_config(None, duplicates)
    dataset, canonical = merge_duplicate_items(load_dataset(data_dir), duplicates_config)
    model = train_two_tower(dataset, train_config, on_epoch=on_epoch)
    version = new_version()
    store = ArtifactStore(artifact_root, signer=signer)
    uri = publish_model(
        model,
        train_config,
        store,
        version,
        str(data_dir),
        set_latest=promote,
        canonical=canonical,
    )
    log.info(
        "model %s published at %s%s; metrics %s",
        version,
        uri,
        "" if promote else " (not promoted: models/LATEST unchanged)",
        model.metrics,
    )
    return uri


def merge_duplicate_items(
    dataset: Dataset, config: DuplicateConfig
) -> tuple[Dataset, CanonicalMap]:
    """Find duplicate items (``catalogue.duplicates``) and fold each group into its
    canonical id: interactions are renamed, the other copies leave the items table, so
    vocabularies, vectors and the index hold canonical ids only. Without an items table
    or its configured columns (nothing to compare) the dataset is returned unchanged with
    the empty map."""
    empty = CanonicalMap(method=config.method, config=config.model_dump())
    if dataset.items is None or not config.enabled:
        return dataset, empty
    missing = [c for c in (*config.text_columns, *config.block_columns) if c not in dataset.items]
    if missing:
        # Like an item feature whose column the data lacks: that catalogue cannot be
        # compared this way, which is no reason to refuse to train on it.
        log.warning("duplicate detection skipped: the items table has no %s column", missing)
        return dataset, empty
    try:
        canonical = find_duplicates(dataset.items, config, dataset.interactions)
    except DuplicateInputError as exc:  # e.g. an id listed twice: train as before, unmerged
        log.warning("duplicate detection skipped: %s", exc)
        return dataset, empty
    if canonical.groups:
        log.info(
            "merging %d duplicate item groups (%d ids) into their canonical ids",
            len(canonical),
            len(canonical.aliases),
        )
    merged = dataclasses.replace(
        dataset,
        interactions=merge_interactions(dataset.interactions, canonical),
        items=drop_aliases(dataset.items, canonical),
    )
    return merged, canonical
