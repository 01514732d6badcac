"""Artifact store: immutable versioned directories plus a ``LATEST`` pointer per kind.

Layout under the store root (a local path or any fsspec URL such as ``s3://bucket/recall``)::

    <root>/<kind>/<version>/...      one immutable artifact (kind: "models" or "indexes")
    <root>/<kind>/LATEST             text file holding the newest published version
    <root>/<kind>/.staging-*/        in-flight uploads; never read

Publishing copies a finished local directory to a staging name, renames it to its version
and only then moves ``LATEST``. A reader that resolves ``LATEST`` therefore never sees a
partly written artifact, and old versions stay for rollback. On a local filesystem both
renames are atomic; on object stores the ``LATEST`` write is the commit point.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from artifacts.errors import ArtifactError, ArtifactNotFound, InvalidArtifact

LATEST = "LATEST"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_version(now: dt.datetime | None = None) -> str:
    """A fresh, lexically time-ordered version name such as ``20261123T073012Z-3f9a1c``."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_version(version: str) -> str:
    """Return ``version`` if it is a safe directory name, else raise InvalidArtifact."""
    if not _VERSION_RE.fullmatch(version) or version == LATEST:
        raise InvalidArtifact(
            f"invalid version {version!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    return version


class ArtifactStore:
    """Versioned artifacts of several kinds under one root URL.

    Args:
        root: local directory or fsspec URL; created on first publish.
        cache_dir: where remote artifacts are downloaded before use (local roots are read
            in place and need no cache).
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.root = str(root).rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self._cache_dir = (
            Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "recall-cache"
        )

    def _path(self, *parts: str) -> str:
        return "/".join([self._root_path.rstrip("/"), *parts])

    def uri(self, kind: str, version: str) -> str:
        """The URL of one artifact directory (what pipeline tasks pass to each other)."""
        path = self._path(kind, check_version(version))
        return path if self.is_local else str(self.fs.unstrip_protocol(path))

    def publish(self, kind: str, version: str, local_dir: Path, *, set_latest: bool = True) -> str:
        """Copy a finished local directory into the store as ``kind/version``; move LATEST.

        Raises:
            ArtifactError: if that version already exists (artifacts are immutable).
        Returns:
            The artifact's URI.
        """
        check_version(version)
        final = self._path(kind, version)
        if self.fs.exists(final):
            raise ArtifactError(
                f"{kind}/{version} already exists in {self.root}; versions are immutable"
            )
        self.fs.makedirs(self._path(kind), exist_ok=True)
        staging = self._path(kind, f".staging-{version}-{secrets.token_hex(4)}")
        try:
            if self.is_local:
                shutil.copytree(local_dir, staging)
            else:
                self.fs.put(str(local_dir).rstrip("/") + "/", staging + "/", recursive=True)
            self.fs.mv(staging, final, recursive=True)
        except BaseException:
            if self.fs.exists(staging):
                self.fs.rm(staging, recursive=True)
            raise
        if set_latest:
            self.set_latest(kind, version)
        return self.uri(kind, version)

    def set_latest(self, kind: str, version: str) -> None:
        """Point ``kind/LATEST`` at an existing version (also how a rollback is done)."""
        if not self.exists(kind, version):
            raise ArtifactNotFound(f"{kind}/{version} is not in {self.root}")
        tmp = self._path(kind, f".{LATEST}.{secrets.token_hex(4)}")
        self.fs.pipe_file(tmp, (version + "\n").encode())
        self.fs.mv(tmp, self._path(kind, LATEST))

    def latest(self, kind: str) -> str:
        """The version ``kind/LATEST`` names. Raises ArtifactNotFound when nothing is published."""
        pointer = self._path(kind, LATEST)
        if not self.fs.exists(pointer):
            raise ArtifactNotFound(
                f"no {kind} published yet under {self.root} (no {kind}/{LATEST})"
            )
        return check_version(self.fs.cat_file(pointer).decode().strip())

    def exists(self, kind: str, version: str) -> bool:
        return bool(self.fs.isdir(self._path(kind, check_version(version))))

    def versions(self, kind: str) -> list[str]:
        """Published versions of ``kind``, oldest first (names sort by time)."""
        base = self._path(kind)
        if not self.fs.exists(base):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        return sorted(n for n in names if _VERSION_RE.fullmatch(n) and n != LATEST)

    def resolve(self, kind: str, version: str | None) -> str:
        """``version`` itself, or the LATEST version when ``version`` is None or empty."""
        return check_version(version) if version else self.latest(kind)

    def local_dir(self, kind: str, version: str) -> Path:
        """A local directory holding the artifact (downloaded into the cache if remote)."""
        if not self.exists(kind, version):
            raise ArtifactNotFound(f"{kind}/{version} is not in {self.root}")
        if self.is_local:
            return Path(self._path(kind, version))
        target = self._cache_dir / kind / version
        if not target.exists():
            partial = target.with_name(f".{version}.{secrets.token_hex(4)}")
            self.fs.get(self._path(kind, version) + "/", str(partial) + "/", recursive=True)
            partial.rename(target)
        return target


def split_uri(uri: str) -> tuple[str, str, str]:
    """``<root>/<kind>/<version>`` → (root, kind, version)."""
    root, kind, version = uri.rstrip("/").rsplit("/", 2)
    return root, kind, check_version(version)


def open_uri(uri: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding the artifact at ``uri`` (what pipeline tasks pass around)."""
    root, kind, version = split_uri(uri)
    return ArtifactStore(root, cache_dir=cache_dir).local_dir(kind, version)
