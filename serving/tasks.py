"""Entry points the index DAG tasks and the CLI call: artifact URIs in, URIs/counts out."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import faiss
import redis

from artifacts.checksums import MANIFEST_NAME
from artifacts.errors import ArtifactNotFound
from artifacts.signing import signer_from_env
from artifacts.store import ArtifactStore, open_uri, split_uri
from keyspace.catalogue_items import DENY_SET, NEW_ITEMS, decode_ids, fresh_vectors_key
from keyspace.connection import REDIS_ERRORS, SyncRedis, make_client
from keyspace.user_vectors import meta_key
from serving.catalogue_fold import (
    CatalogueChanges,
    fold,
    forget_folded,
    index_item_ids,
    read_changes,
)
from serving.errors import BackendUnavailable
from serving.index.artifact import INDEX_KIND, IndexManifest, publish_index
from serving.index.params import DEFAULT_MIN_RECALL, choose_params
from serving.model_artifact import open_model_artifact
from serving.user_vectors import (
    ProgressCallback,
    delete_user_vectors,
    load_user_vectors,
    loaded_model_versions,
    vectors_load_problem,
)

log = logging.getLogger(__name__)


class StaleModel(RuntimeError):
    """The model an index was built from is no longer ``models/LATEST`` (a newer model was
    promoted while the index was being built): publishing it would roll servers back."""


class UserVectorsNotLoaded(RuntimeError):
    """A model's user vectors are not (completely) in Redis: an index of that model would
    serve no user from their vector (every call falls back). Not retryable: someone has
    to load them (``recall_vectors``) first."""


def check_user_vectors(model_uri: str, redis_url: str) -> int:
    """Check that the user vectors of the model at ``model_uri`` are loaded in Redis: its
    meta key ``recall:uvmeta:<model_version>`` exists and records at least the model's user
    count (manifest ``user_count``, else ``user_ids.json``). One GET; the artifact's files
    are not checksummed here (``build_index`` does that). Returns the model's user count.

    Raises:
        UserVectorsNotLoaded: not loaded, or an incomplete load; the message names the
            version, what Redis holds and the fix.
        BackendUnavailable: Redis cannot be reached (retryable).
    """
    model = open_model_artifact(open_uri(model_uri), verify=False)
    expected = model.user_count()
    client = _connect(redis_url)
    try:
        meta_raw = client.get(meta_key(model.model_version))
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(
            f"checking the user vectors of model {model.model_version} in Redis failed: {exc}"
        ) from exc
    finally:
        client.close()
    problem = vectors_load_problem(meta_raw, expected)
    if problem is not None:
        raise UserVectorsNotLoaded(
            f"the user vectors of model {model.model_version} are not loaded in Redis: "
            f"found {problem}; an index of it would serve every user the fallback. "
            f"Trigger recall_vectors with model_uri={model_uri} first (it schedules "
            f"recall_index), or run `recall vectors load --model-version "
            f"{model.model_version}` and re-run recall_index"
        )
    log.info("user vectors of model %s are loaded (%d users)", model.model_version, expected)
    return expected


def build_index(
    model_uri: str,
    min_recall: float = DEFAULT_MIN_RECALL,
    allow_gpu: bool = True,
    *,
    set_latest: bool = True,
    require_latest_model: bool = False,
    redis_url: str | None = None,
    fast_scan: bool = False,
) -> str:
    """Build, quality-gate and publish an IVF-PQ + re-rank index for the model at ``model_uri``.

    ``require_latest_model``: the nightly rebuild's guard against interleaving with a
    training run. The index is published without moving LATEST, then LATEST moves only if
    the model is still ``models/LATEST``; otherwise StaleModel is raised (the version stays
    in the store, unused, and pruned like any old one).

    The index goes into the same store as the model, under ``indexes/``; LATEST moves only
    after the whole artifact is in place (``set_latest`` False: it does not move; with a
    fleet configured the ship task promotes it after a verified canary, serving.fleet).
    With ``$RECALL_SIGNING_KEY_FILE`` set, the manifest is signed with that key. Returns
    the index URI.

    ``redis_url``: fold the catalogue changes in (``serving.catalogue_fold``): items added
    since training and embedded with this model join the index, denied items leave it;
    once LATEST points at the index, the folded items leave the fresh segment.
    """
    root, _, _ = split_uri(model_uri)
    store = ArtifactStore(root, signer=signer_from_env())
    model = open_model_artifact(open_uri(model_uri))
    changes = CatalogueChanges()
    if redis_url:
        client = _connect(redis_url)
        try:
            changes = read_changes(client, model)
        finally:
            client.close()
    uri, manifest = publish_index(
        fold(model, changes),
        store,
        min_recall=min_recall,
        allow_gpu=allow_gpu,
        fast_scan=fast_scan,
        set_latest=set_latest and not require_latest_model,
    )
    if require_latest_model:
        latest_model = store.latest("models")
        if latest_model != model.model_version:
            raise StaleModel(
                f"index {manifest.index_version} was built from model {model.model_version}, "
                f"but models/LATEST moved to {latest_model} meanwhile; not promoted"
            )
        if set_latest:
            store.set_latest(INDEX_KIND, manifest.index_version)
    if redis_url and set_latest and changes.ids:
        client = _connect(redis_url)
        try:
            forget_folded(client, model.model_version, changes)
        finally:
            client.close()
    log.info(
        "index %s (%s nprobe=%d refine_factor=%d, %s, %s) published at %s",
        manifest.index_version,
        manifest.factory,
        manifest.nprobe,
        manifest.refine_factor,
        ", ".join(f"recall@{q.k}={q.recall:.3f}" for q in manifest.quality_by_k),
        manifest.build_device,
        uri,
    )
    return uri


def prune_vectors(artifact_root: str, redis_url: str, keep_indexes: int = 3) -> list[str]:
    """Delete from Redis the user vectors of models no recent index needs.

    Kept: the models of the newest ``keep_indexes`` published indexes (what servers serve
    or may roll back to) and the LATEST model. Returns the model versions deleted.
    """
    if keep_indexes < 1:
        raise ValueError("keep_indexes must be at least 1")
    store = ArtifactStore(artifact_root)
    keep = {
        index_model_version(store, version)
        for version in store.versions(INDEX_KIND)[-keep_indexes:]
    }
    with contextlib.suppress(ArtifactNotFound):
        keep.add(store.latest("models"))
    client = _connect(redis_url)
    try:
        stale = [v for v in loaded_model_versions(client) if v not in keep]
        for version in stale:
            removed = delete_user_vectors(client, version)
            # The model's fresh item vectors go with it (no server can pair them any more).
            client.delete(fresh_vectors_key(version))
            log.info("deleted %d user vectors of model %s", removed, version)
    finally:
        client.close()
    return stale


def _connect(redis_url: str) -> SyncRedis:
    """A blocking client for a pipeline task (a single Redis or a cluster, by URL).

    Raises:
        BackendUnavailable: a cluster none of whose nodes answers.
        RedisConnectionConfigError: the URL or the ``RECALL_REDIS_*`` settings are wrong.
    """
    try:
        return make_client(redis_url, socket_timeout=10)
    except redis.ConnectionError as exc:
        raise BackendUnavailable(str(exc)) from exc


def rebuild_reason(
    artifact_root: str,
    min_recall: float = DEFAULT_MIN_RECALL,
    redis_url: str | None = None,
    *,
    fast_scan: bool = False,
) -> str | None:
    """Why the nightly rebuild should build a new index, or None when the LATEST index is
    already what a rebuild would produce: built from ``models/LATEST``, with the same index
    configuration (IVF-PQ factory and re-rank storage for this catalogue), the same gate
    minimum and the same Faiss version, and (with ``redis_url``) no added item waiting to
    be folded in and no denied item still in it."""
    store = ArtifactStore(artifact_root)
    try:
        model_version = store.latest("models")
    except ArtifactNotFound:
        return None  # nothing to index yet; the training DAG publishes the first model
    try:
        index_version = store.latest(INDEX_KIND)
    except ArtifactNotFound:
        return "no index published yet"
    path = store.local_dir(INDEX_KIND, index_version) / MANIFEST_NAME
    manifest = IndexManifest.model_validate_json(path.read_text())
    if manifest.model_version != model_version:
        return (
            f"index {index_version} is of model {manifest.model_version}, LATEST is {model_version}"
        )
    expected = choose_params(manifest.item_count, manifest.dim, fast_scan=fast_scan)
    if (expected.factory, expected.refine) != (manifest.factory, manifest.refine):
        return (
            f"index configuration changed: {manifest.factory} ({manifest.refine}) → "
            f"{expected.factory} ({expected.refine})"
        )
    if abs(manifest.quality.min_recall - min_recall) > 1e-9:
        return f"gate minimum changed: {manifest.quality.min_recall} → {min_recall}"
    # The search tuner's targets pick the served nprobe/refine factor; older manifests
    # (None) did not record them and are not rebuilt for it.
    from serving.index.artifact import tuning_record

    tuning = tuning_record(expected.tuning)
    if manifest.search_tuning is not None and manifest.search_tuning != tuning:
        return f"search tuning targets changed: {manifest.search_tuning} → {tuning}"
    if manifest.faiss_version != faiss.__version__:
        return f"Faiss changed: {manifest.faiss_version} → {faiss.__version__}"
    if redis_url:
        return _catalogue_reason(redis_url, store.local_dir(INDEX_KIND, index_version))
    return None


def _catalogue_reason(redis_url: str, index_dir: Path) -> str | None:
    """Why the catalogue changes in Redis call for a rebuild of the index at ``index_dir``."""
    client = _connect(redis_url)
    try:
        added = decode_ids(client.hkeys(NEW_ITEMS))
        denied = decode_ids(client.smembers(DENY_SET))
    finally:
        client.close()
    indexed = index_item_ids(index_dir)
    # Records a fleet build already folded in (the fleet's ship moves LATEST, so the build
    # did not clear them) are not a reason to build again.
    waiting = added - indexed
    if waiting:
        return f"{len(waiting)} added item(s) to fold in"
    still = denied & indexed
    if still:
        return f"{len(still)} removed item(s) still in the index"
    return None


def index_model_version(store: ArtifactStore, index_version: str) -> str:
    """The model version an index was built from (read from its manifest)."""
    path = store.local_dir(INDEX_KIND, index_version) / MANIFEST_NAME
    return IndexManifest.model_validate_json(path.read_text()).model_version


def load_vectors(
    model_uri: str, redis_url: str, on_progress: ProgressCallback | None = None
) -> int:
    """Write the model's user vectors to Redis under its model version. Returns the count."""
    model = open_model_artifact(open_uri(model_uri))
    client = _connect(redis_url)
    try:
        return load_user_vectors(model, client, on_progress=on_progress)
    finally:
        client.close()
