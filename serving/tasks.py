"""Entry points the index DAG tasks and the CLI call: artifact URIs in, URIs/counts out."""

from __future__ import annotations

import logging

import redis

from artifacts.store import ArtifactStore, open_uri, split_uri
from serving.index.artifact import publish_index
from serving.model_artifact import open_model_artifact
from serving.user_vectors import ProgressCallback, load_user_vectors

log = logging.getLogger(__name__)


def build_index(model_uri: str, min_recall: float = 0.8, allow_gpu: bool = True) -> str:
    """Build, quality-gate and publish an IVF-PQ index for the model at ``model_uri``.

    The index goes into the same store as the model, under ``indexes/``; LATEST moves only
    after the whole artifact is in place. Returns the index URI.
    """
    root, _, _ = split_uri(model_uri)
    model = open_model_artifact(open_uri(model_uri))
    uri, manifest = publish_index(
        model, ArtifactStore(root), min_recall=min_recall, allow_gpu=allow_gpu
    )
    log.info(
        "index %s (%s, recall@%d=%.3f, %s) published at %s",
        manifest.index_version,
        manifest.factory,
        manifest.quality.k,
        manifest.quality.recall,
        manifest.build_device,
        uri,
    )
    return uri


def load_vectors(
    model_uri: str, redis_url: str, on_progress: ProgressCallback | None = None
) -> int:
    """Write the model's user vectors to Redis under its model version. Returns the count."""
    model = open_model_artifact(open_uri(model_uri))
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        return load_user_vectors(model, client, on_progress=on_progress)
    finally:
        client.close()
