"""Signed manifests against a real recall server, a real Redis and real Faiss indexes:
unsigned, mis-signed and re-keyed artifacts with RECALL_TRUSTED_KEYS_DIR set, and the
zero-config default (no keys → no check)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from prometheus_client import REGISTRY

from artifacts.checksums import MANIFEST_NAME, SIGNATURE_NAME
from artifacts.signing import (
    SIGNING_KEY_ENV,
    KeyPairFiles,
    ManifestSigner,
    TrustedKeys,
    generate_keypair,
)
from artifacts.store import ArtifactStore
from recall_cli.local_redis import LocalRedis
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.server import RecallServer
from serving.vector_repair import RepairResult, VectorRepairer
from tests.integration.harness import ServerThread, copy_index_as, local_settings, run_cli
from tests.integration.synthetic_index import MODEL_VERSION, publish_synthetic

pytestmark = pytest.mark.integration


@dataclass
class Signed:
    """A synthetic store whose model and index are signed by ``old``; ``new`` is a second
    key (trusted after a rotation), ``rogue`` a key no server trusts."""

    root: Path
    index_version: str
    user_id: str
    old: KeyPairFiles
    new: KeyPairFiles
    rogue: KeyPairFiles


@pytest.fixture(scope="module")
def signed_store(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    work = tmp_path_factory.mktemp("signed")
    synth = publish_synthetic(work, redis_server.url, users=200, items=600, dim=16)
    keys = work / "keys"
    old, new, rogue = (generate_keypair(keys, name) for name in ("old", "new", "rogue"))
    signer = ManifestSigner.from_file(old.private_key)
    signer.sign_dir(synth.artifact_root / "models" / MODEL_VERSION)
    signer.sign_dir(synth.artifact_root / "indexes" / synth.index.index_version)
    return Signed(
        synth.artifact_root, synth.index.index_version, synth.user_ids[0], old, new, rogue
    )


@pytest.fixture
def store(signed_store: Signed, tmp_path: Path) -> Signed:
    """A private copy of the signed store (tests publish into it and move LATEST)."""
    root = tmp_path / "artifacts"
    shutil.copytree(signed_store.root, root)
    return dataclasses.replace(signed_store, root=root)


def trust(tmp_path: Path, *pairs: KeyPairFiles) -> str:
    directory = tmp_path / "trusted"
    directory.mkdir()
    for pair in pairs:
        shutil.copy(pair.public_key, directory / pair.public_key.name)
    return str(directory)


def settings(s: Signed, redis_url: str, **extra: Any) -> ServerSettings:
    return local_settings(s.root, redis_url, **{"vector_repair_interval_s": 0, **extra})


def index_copy(
    s: Signed,
    version: str,
    key: KeyPairFiles | None,
    *,
    tamper: bool = False,
    model_version: str | None = None,
) -> str:
    """Publish-by-hand a copy of the signed index as ``version``, signed by ``key`` (None:
    unsigned). ``tamper`` edits the manifest after signing; ``model_version`` points the
    copy at another model."""
    target = copy_index_as(s.root / "indexes" / s.index_version, version)
    (target / SIGNATURE_NAME).unlink(missing_ok=True)
    if model_version:
        doc = json.loads((target / MANIFEST_NAME).read_text())
        doc["model_version"] = model_version
        (target / MANIFEST_NAME).write_text(json.dumps(doc))
    if key is not None:
        ManifestSigner.from_file(key.private_key).sign_dir(target)
    if tamper:
        doc = json.loads((target / MANIFEST_NAME).read_text())
        doc["build_note"] = "rebuilt by someone without the key"
        (target / MANIFEST_NAME).write_text(json.dumps(doc))
    return version


def unsigned_model_copy(s: Signed, version: str) -> str:
    target = s.root / "models" / version
    shutil.copytree(s.root / "models" / MODEL_VERSION, target)
    (target / SIGNATURE_NAME).unlink()
    doc = json.loads((target / MANIFEST_NAME).read_text())
    doc["model_version"] = version
    (target / MANIFEST_NAME).write_text(json.dumps(doc))
    return version


@pytest.fixture
def client_of() -> Iterator[Callable[[RecallServer], RecallClient]]:
    clients: list[RecallClient] = []

    def make(server: RecallServer) -> RecallClient:
        client = RecallClient(f"127.0.0.1:{server.port}", f"127.0.0.1:{server.admin_port}")
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def refused(client: RecallClient, version: str) -> str:
    """LoadIndex(version) must fail with FAILED_PRECONDITION; its message."""
    with pytest.raises(grpc.RpcError) as caught:
        client.load_index(version)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    return str(caught.value.details())


def test_without_trusted_keys_unsigned_artifacts_are_served(
    store: Signed, redis_server: LocalRedis, client_of: Callable[[RecallServer], RecallClient]
) -> None:
    for sig in store.root.rglob(SIGNATURE_NAME):
        sig.unlink()
    unsigned = index_copy(store, "99990101T000000Z-nosig0", None)
    with ServerThread(settings(store, redis_server.url)) as server:
        client = client_of(server)
        assert client.status().index_version == store.index_version
        assert client.load_index(unsigned).index_version == unsigned
        assert len(client.recall(store.user_id, 5).candidates) == 5


def test_trusted_keys_refuse_unsigned_and_mis_signed_indexes_and_keep_serving(
    store: Signed,
    redis_server: LocalRedis,
    tmp_path: Path,
    client_of: Callable[[RecallServer], RecallClient],
) -> None:
    unsigned = index_copy(store, "99990101T000000Z-nosig0", None)
    tampered = index_copy(store, "99990102T000000Z-tamper", store.old, tamper=True)
    foreign = index_copy(store, "99990103T000000Z-rogue0", store.rogue)
    model = unsigned_model_copy(store, "99990104T000000Z-model0")
    on_unsigned_model = index_copy(store, "99990105T000000Z-onmodl", store.old, model_version=model)
    expected = {
        unsigned: "is unsigned",
        tampered: f"signature by key {store.old.key_id} does not match",
        foreign: f"signed by key {store.rogue.key_id}, which is not trusted",
        on_unsigned_model: f"its model {model}: models/{model} is unsigned",
    }
    conf = settings(store, redis_server.url, trusted_keys_dir=trust(tmp_path, store.old))
    with ServerThread(conf) as server:
        client = client_of(server)
        assert client.status().index_version == store.index_version  # signed: accepted
        for version, reason in expected.items():
            message = refused(client, version)
            assert reason in message and version in message, message
            assert client.status().index_version == store.index_version
            assert len(client.recall(store.user_id, 5).candidates) == 5


def test_unsigned_latest_is_not_served_at_start(
    store: Signed,
    redis_server: LocalRedis,
    tmp_path: Path,
    client_of: Callable[[RecallServer], RecallClient],
) -> None:
    unsigned = index_copy(store, "99990101T000000Z-nosig0", None)
    ArtifactStore(store.root).set_latest("indexes", unsigned)
    conf = settings(store, redis_server.url, trusted_keys_dir=trust(tmp_path, store.old))
    with ServerThread(conf) as server:
        client = client_of(server)
        assert not client.is_serving()
        with pytest.raises(grpc.RpcError) as caught:
            client.recall(store.user_id, 5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert client.load_index(store.index_version).index_version == store.index_version
        assert client.is_serving()


def load_failures() -> float:
    return REGISTRY.get_sample_value("recall_index_loads_total", {"result": "failure"}) or 0


def test_watcher_skips_a_mis_signed_latest_and_keeps_the_old_index(
    store: Signed,
    redis_server: LocalRedis,
    tmp_path: Path,
    client_of: Callable[[RecallServer], RecallClient],
) -> None:
    conf = settings(
        store,
        redis_server.url,
        trusted_keys_dir=trust(tmp_path, store.old),
        watch_interval_s=0.2,
    )
    artifacts = ArtifactStore(store.root)
    with ServerThread(conf) as server:
        client = client_of(server)
        assert client.status().index_version == store.index_version
        failures = load_failures()
        artifacts.set_latest("indexes", index_copy(store, "99990103T000000Z-rogue0", store.rogue))
        deadline = time.monotonic() + 15
        while load_failures() <= failures and time.monotonic() < deadline:
            time.sleep(0.1)
        assert load_failures() > failures
        time.sleep(0.5)
        assert client.status().index_version == store.index_version
        assert len(client.recall(store.user_id, 5).candidates) == 5


def test_re_keyed_index_signed_by_a_second_trusted_key_is_accepted(
    store: Signed,
    redis_server: LocalRedis,
    tmp_path: Path,
    client_of: Callable[[RecallServer], RecallClient],
) -> None:
    rekeyed = index_copy(store, "99990106T000000Z-newkey", store.new)
    conf = settings(store, redis_server.url, trusted_keys_dir=trust(tmp_path, store.old, store.new))
    with ServerThread(conf) as server:
        client = client_of(server)
        assert client.load_index(rekeyed).index_version == rekeyed
        assert client.status().index_version == rekeyed
        assert client.recall(store.user_id, 5).index_version == rekeyed
        # Checks stay on: a key outside the two is still refused.
        foreign = index_copy(store, "99990103T000000Z-rogue0", store.rogue)
        assert store.rogue.key_id in refused(client, foreign)
        assert client.status().index_version == rekeyed


def test_self_repair_refuses_user_vectors_of_an_unsigned_model(
    store: Signed, redis_server: LocalRedis, tmp_path: Path
) -> None:
    trusted = TrustedKeys.from_dir(Path(trust(tmp_path, store.old)))
    model = unsigned_model_copy(store, "99990104T000000Z-model0")
    client = redis.Redis.from_url(redis_server.url)
    repairer = VectorRepairer(ArtifactStore(store.root, trusted_keys=trusted), client)
    try:
        outcome = repairer.repair_once(model)
        assert outcome.result is RepairResult.FAILED
        assert f"models/{model} is unsigned" in (outcome.detail or "")
        assert repairer.repair_once(MODEL_VERSION).result is not RepairResult.FAILED
    finally:
        repairer.close()
        client.close()


def test_recall_keys_sign_and_verify(store: Signed, tmp_path: Path) -> None:
    unsigned = index_copy(store, "99990101T000000Z-nosig0", None)
    keys = trust(tmp_path, store.old)
    home = tmp_path / "home"
    common = ["--artifact-root", str(store.root)]
    ok = run_cli(["keys", "verify", store.index_version, *common, "--trusted-keys-dir", keys], home)
    assert ok.returncode == 0, ok.stderr
    assert f"signed by trusted key {store.old.key_id}" in ok.stdout
    assert f"models/{MODEL_VERSION}: signed by trusted key" in ok.stdout

    bad = run_cli(["keys", "verify", unsigned, *common, "--trusted-keys-dir", keys], home)
    assert bad.returncode == 1 and "is unsigned" in bad.stderr
    assert "Traceback" not in bad.stderr

    signed = run_cli(["keys", "sign", unsigned, *common, "--key", str(store.old.private_key)], home)
    assert signed.returncode == 0, signed.stderr
    again = run_cli(["keys", "verify", unsigned, *common, "--trusted-keys-dir", keys], home)
    assert again.returncode == 0, again.stderr


def test_build_index_task_signs_with_the_key_in_the_environment(
    store: Signed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import tasks

    monkeypatch.setenv(SIGNING_KEY_ENV, str(store.new.private_key))
    artifacts = ArtifactStore(store.root)
    uri = tasks.build_index(artifacts.uri("models", MODEL_VERSION), min_recall=0.0, allow_gpu=False)
    version = Path(uri).name
    assert version != store.index_version
    trusted = TrustedKeys.from_dir(Path(trust(tmp_path, store.new)))
    assert artifacts.verify_signature("indexes", version, trusted) == store.new.key_id


def test_train_task_reads_the_signing_key_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from artifacts.signing import SigningKeyError
    from training import tasks

    missing = tmp_path / "missing.key"
    monkeypatch.setenv(SIGNING_KEY_ENV, str(missing))
    # No data directory either: the key must be what fails, seconds before any training.
    with pytest.raises(SigningKeyError, match=f"cannot read signing key {missing}"):
        tasks.train(tmp_path / "no-data", str(tmp_path / "artifacts"))
