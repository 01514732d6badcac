"""artifacts.store: immutable versions, the LATEST pointer, atomic publish, URIs."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from artifacts import store as store_module
from artifacts.errors import ArtifactError, ArtifactNotFound, InvalidArtifact
from artifacts.store import ArtifactStore, check_version, new_version, open_uri, split_uri

KIND = "models"


def make_dir(base: Path, name: str, payload: str) -> Path:
    d = base / name
    (d / "sub").mkdir(parents=True)
    (d / "data.txt").write_text(payload)
    (d / "sub" / "nested.txt").write_text(payload * 2)
    return d


def staging_dirs(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(".staging-")]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_dir(tmp_path / "src", "one", "first")


def test_latest_before_any_publish_raises_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound):
        store.latest(KIND)
    assert store.versions(KIND) == []
    assert not store.exists(KIND, "v1")


def test_publish_copies_files_sets_latest_and_returns_uri(
    store: ArtifactStore, src: Path, tmp_path: Path
) -> None:
    uri = store.publish(KIND, "v1", src)

    assert store.latest(KIND) == "v1"
    assert (tmp_path / "store" / KIND / "LATEST").read_text() == "v1\n"
    published = store.local_dir(KIND, "v1")
    assert published == tmp_path / "store" / KIND / "v1"
    assert (published / "data.txt").read_text() == "first"
    assert (published / "sub" / "nested.txt").read_text() == "firstfirst"
    assert uri == str(published)
    assert store.uri(KIND, "v1") == uri
    assert staging_dirs(tmp_path / "store") == []
    # Only the version and the pointer are left in the kind directory.
    assert sorted(p.name for p in (tmp_path / "store" / KIND).iterdir()) == ["LATEST", "v1"]


def test_publish_without_set_latest_leaves_pointer(store: ArtifactStore, src: Path) -> None:
    store.publish(KIND, "v1", src)
    store.publish(KIND, "v2", src, set_latest=False)
    assert store.latest(KIND) == "v1"
    assert store.exists(KIND, "v2")


def test_versions_are_immutable(store: ArtifactStore, src: Path, tmp_path: Path) -> None:
    store.publish(KIND, "v1", src)
    other = make_dir(tmp_path / "src", "two", "second")
    with pytest.raises(ArtifactError, match="immutable"):
        store.publish(KIND, "v1", other)
    assert (store.local_dir(KIND, "v1") / "data.txt").read_text() == "first"
    assert staging_dirs(tmp_path / "store") == []


def test_versions_sorted_oldest_first_and_ignore_pointer_and_staging(
    store: ArtifactStore, src: Path, tmp_path: Path
) -> None:
    names = ["20261123T073012Z-bbbbbb", "20250101T000000Z-ffffff", "20261123T073013Z-000000"]
    for name in names:
        store.publish(KIND, name, src)
    (tmp_path / "store" / KIND / ".staging-leftover-1234").mkdir()
    assert store.versions(KIND) == sorted(names)
    assert store.latest(KIND) == names[-1]  # LATEST is the last published, not the max
    assert store.versions("indexes") == []


def test_set_latest_rolls_back_and_rejects_unknown_versions(
    store: ArtifactStore, src: Path
) -> None:
    store.publish(KIND, "v1", src)
    store.publish(KIND, "v2", src)
    assert store.latest(KIND) == "v2"
    store.set_latest(KIND, "v1")
    assert store.latest(KIND) == "v1"
    assert store.resolve(KIND, None) == "v1"
    assert store.resolve(KIND, "") == "v1"
    assert store.resolve(KIND, "v2") == "v2"
    with pytest.raises(ArtifactNotFound):
        store.set_latest(KIND, "v3")
    assert store.latest(KIND) == "v1"


def test_local_dir_of_unknown_version_raises_not_found(store: ArtifactStore, src: Path) -> None:
    store.publish(KIND, "v1", src)
    with pytest.raises(ArtifactNotFound):
        store.local_dir(KIND, "v2")


@pytest.mark.parametrize(
    "bad", ["../x", "LATEST", "", ".staging-x", "a/b", "-lead", "x" * 129, "sp ace", "v1\\x"]
)
def test_check_version_rejects_unsafe_names(bad: str) -> None:
    with pytest.raises(InvalidArtifact):
        check_version(bad)


@pytest.mark.parametrize("good", ["v1", "20261123T073012Z-3f9a1c", "1.2.3_rc-1", "x" * 128])
def test_check_version_accepts_safe_names(good: str) -> None:
    assert check_version(good) == good


def test_check_version_rejects_trailing_newline() -> None:
    with pytest.raises(InvalidArtifact):
        check_version("v1\n")


def test_publish_rejects_bad_version_before_touching_the_store(
    store: ArtifactStore, src: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArtifact):
        store.publish(KIND, "../escape", src)
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / "escape").exists()


def test_failed_publish_of_missing_dir_leaves_no_staging_and_keeps_latest(
    store: ArtifactStore, src: Path, tmp_path: Path
) -> None:
    store.publish(KIND, "v1", src)
    with pytest.raises(FileNotFoundError):
        store.publish(KIND, "v2", tmp_path / "does-not-exist")
    assert staging_dirs(tmp_path / "store") == []
    assert store.latest(KIND) == "v1"
    assert store.versions(KIND) == ["v1"]
    assert not store.exists(KIND, "v2")


def test_publish_failing_mid_copy_removes_partial_staging(
    store: ArtifactStore, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.publish(KIND, "v1", src)
    seen: list[Path] = []

    def copy_then_fail(source: Path, dest: str) -> None:
        shutil.copytree(source, dest)
        seen.append(Path(dest))
        raise OSError("disk full")

    # Replace the store module's view of shutil only (shutil.copytree recurses via its global).
    monkeypatch.setattr(store_module, "shutil", SimpleNamespace(copytree=copy_then_fail))
    with pytest.raises(OSError, match="disk full"):
        store.publish(KIND, "v2", src)

    assert seen and seen[0].name.startswith(".staging-v2-")  # staging really was written
    assert not seen[0].exists()
    assert staging_dirs(tmp_path / "store") == []
    assert store.latest(KIND) == "v1"
    assert store.versions(KIND) == ["v1"]


def test_publish_failing_at_rename_removes_staging(
    store: ArtifactStore, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.publish(KIND, "v1", src)

    def broken_mv(*args: object, **kwargs: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(store.fs, "mv", broken_mv)
    with pytest.raises(OSError, match="rename failed"):
        store.publish(KIND, "v2", src)
    monkeypatch.undo()
    assert staging_dirs(tmp_path / "store") == []
    assert store.latest(KIND) == "v1"
    assert not store.exists(KIND, "v2")


def test_split_uri_and_open_uri_round_trip(store: ArtifactStore, src: Path, tmp_path: Path) -> None:
    uri = store.publish(KIND, "20261123T073012Z-3f9a1c", src)
    root, kind, version = split_uri(uri)
    assert (root, kind, version) == (str(tmp_path / "store"), KIND, "20261123T073012Z-3f9a1c")
    assert split_uri(uri + "/") == (root, kind, version)
    opened = open_uri(uri)
    assert (opened / "data.txt").read_text() == "first"
    assert opened == store.local_dir(KIND, version)


def test_split_uri_rejects_unsafe_version() -> None:
    with pytest.raises(InvalidArtifact):
        split_uri("/store/models/LATEST")


def test_open_uri_of_unpublished_version_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound):
        open_uri(str(tmp_path / "store" / KIND / "v9"))


def test_remote_store_publishes_and_downloads_into_cache(src: Path, tmp_path: Path) -> None:
    """The fsspec branch (put / cat / get), offline via the in-memory filesystem."""
    root = f"memory://unit-{secrets.token_hex(4)}/recall"
    cache = tmp_path / "cache"
    remote = ArtifactStore(root, cache_dir=cache)
    assert not remote.is_local

    uri = remote.publish(KIND, "v1", src)
    assert uri.startswith("memory://")
    assert remote.latest(KIND) == "v1"
    assert remote.versions(KIND) == ["v1"]
    with pytest.raises(ArtifactError):
        remote.publish(KIND, "v1", src)

    local = open_uri(uri, cache_dir=cache)
    assert local == cache / KIND / "v1"
    assert (local / "data.txt").read_text() == "first"
    assert (local / "sub" / "nested.txt").read_text() == "firstfirst"
    assert not any(p.name.startswith(".") for p in (cache / KIND).iterdir())


def test_new_version_is_time_ordered_and_valid() -> None:
    early = dt.datetime(2026, 11, 23, 7, 30, 12, tzinfo=dt.UTC)
    later = early + dt.timedelta(seconds=1)
    much_later = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    a, b, c = new_version(early), new_version(later), new_version(much_later)
    assert re.fullmatch(r"20261123T073012Z-[0-9a-f]{6}", a)
    assert a < b < c
    for v in (a, b, c, new_version()):
        assert check_version(v) == v
    assert new_version(early) != new_version(early)  # random suffix avoids collisions


def test_new_version_defaults_to_utc_now() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = dt.datetime.strptime(new_version().split("-")[0], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=dt.UTC
    )
    after = dt.datetime.now(dt.UTC)
    assert before <= stamp <= after


# ---------------------------------------------------------------- PIN and PREVIOUS
def test_set_latest_records_the_replaced_version_as_previous(
    store: ArtifactStore, src: Path
) -> None:
    store.publish(KIND, "v1", src)
    assert store.previous(KIND) is None
    store.publish(KIND, "v2", src)
    assert store.previous(KIND) == "v1"
    store.set_latest(KIND, "v2")  # no move: PREVIOUS stays what it was
    assert store.previous(KIND) == "v1"
    store.set_latest(KIND, "v1", previous="v0-restored")
    assert (store.latest(KIND), store.previous(KIND)) == ("v1", "v0-restored")


def test_pin_is_durable_and_wins_over_latest_until_unpinned(
    store: ArtifactStore, src: Path, tmp_path: Path
) -> None:
    store.publish(KIND, "v1", src)
    store.publish(KIND, "v2", src)
    assert store.pinned(KIND) is None and store.target(KIND) == "v2"

    held = store.pin(KIND, "v1", reason="bad recall in v2", by="oncall")
    assert (held.version, held.reason, held.by) == ("v1", "bad recall in v2", "oncall")
    assert held.at.endswith("+00:00")
    # A fresh store object (another process) sees the same pin: it lives in the store.
    again = ArtifactStore(tmp_path / "store")
    assert again.pinned(KIND) == held
    assert again.target(KIND) == "v1"
    store.publish(KIND, "v3", src)  # a publish under a pin moves LATEST, not the pin
    assert (store.latest(KIND), store.target(KIND)) == ("v3", "v1")
    assert "PIN" not in store.versions(KIND)
    assert "PREVIOUS" not in store.versions(KIND)

    assert store.unpin(KIND) == held
    assert store.pinned(KIND) is None and store.target(KIND) == "v3"
    assert store.unpin(KIND) is None


def test_pin_refuses_unknown_versions_and_empty_reasons(store: ArtifactStore, src: Path) -> None:
    store.publish(KIND, "v1", src)
    with pytest.raises(ArtifactNotFound, match="v9"):
        store.pin(KIND, "v9", reason="x")
    with pytest.raises(InvalidArtifact, match="reason"):
        store.pin(KIND, "v1", reason="  ")
    with pytest.raises(InvalidArtifact):
        check_version("PIN")
    assert store.pinned(KIND) is None


def test_a_damaged_pin_file_is_an_error_not_ignored(
    store: ArtifactStore, src: Path, tmp_path: Path
) -> None:
    store.publish(KIND, "v1", src)
    (tmp_path / "store" / KIND / "PIN").write_text("{not json")
    with pytest.raises(InvalidArtifact, match="not a valid pin"):
        store.pinned(KIND)
