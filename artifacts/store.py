"""Artifact store: immutable versioned directories plus a ``LATEST`` pointer per kind.

Layout under the store root (a local path or any fsspec URL such as ``s3://bucket/recall``)::

    <root>/<kind>/<version>/...      one immutable artifact (kind: "models" or "indexes")
    <root>/<kind>/LATEST             text file holding the newest published version
    <root>/<kind>/PREVIOUS           text file: what LATEST named before its last move
    <root>/<kind>/PIN                JSON: a version held by an operator (who, why, when);
                                     while it exists, servers serve it instead of LATEST
    <root>/<kind>/.staging-*/        in-flight uploads; never read

Publishing copies a finished local directory to a staging name, renames it to its version
and only then moves ``LATEST``. A reader that resolves ``LATEST`` therefore never sees a
partly written artifact, and old versions stay for rollback. On a local filesystem both
renames are atomic; on object stores the ``LATEST`` write is the commit point.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import re
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from artifacts.checksums import MANIFEST_NAME
from artifacts.errors import ArtifactError, ArtifactNotFound, InvalidArtifact
from artifacts.signing import SIGNATURE_NAME, ManifestSigner, TrustedKeys

LATEST = "LATEST"
PREVIOUS = "PREVIOUS"
PIN = "PIN"
_POINTERS = frozenset({LATEST, PREVIOUS, PIN})
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_version(now: dt.datetime | None = None) -> str:
    """A fresh, lexically time-ordered version name such as ``20261123T073012Z-3f9a1c``."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def check_version(version: str) -> str:
    """Return ``version`` if it is a safe directory name, else raise InvalidArtifact."""
    if not _VERSION_RE.fullmatch(version) or version in _POINTERS:
        raise InvalidArtifact(
            f"invalid version {version!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    return version


@dataclass(frozen=True)
class Pin:
    """An operator's hold on one version (``<kind>/PIN``): servers and ships follow it
    instead of LATEST until it is removed. ``at`` is an ISO-8601 UTC timestamp."""

    version: str
    reason: str
    by: str
    at: str


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


class ArtifactStore:
    """Versioned artifacts of several kinds under one root URL.

    Args:
        root: local directory or fsspec URL; created on first publish.
        cache_dir: where remote artifacts are downloaded before use (local roots are read
            in place and need no cache).
        signer: publish writes ``manifest.sig`` with it (artifacts/signing.py); None:
            artifacts are published unsigned.
        trusted_keys: ``local_dir`` hands out only artifacts whose manifest is signed by
            one of these keys (else UntrustedArtifact); None: no signature check.
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path | None = None,
        *,
        signer: ManifestSigner | None = None,
        trusted_keys: TrustedKeys | None = None,
    ) -> None:
        self.root = str(root).rstrip("/")
        self.signer = signer
        self.trusted_keys = trusted_keys
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

        With a signer, ``manifest.sig`` (over ``local_dir``'s manifest bytes) is written
        into the staging copy before the rename, so the version never exists unsigned;
        ``local_dir`` itself is left as it was.

        Raises:
            ArtifactError: if that version already exists (artifacts are immutable).
        Returns:
            The artifact's URI.
        """
        check_version(version)
        signature = None
        if self.signer is not None:  # before any write: a missing manifest publishes nothing
            try:
                signature = self.signer.signature_bytes((local_dir / MANIFEST_NAME).read_bytes())
            except OSError as exc:
                raise InvalidArtifact(f"{local_dir}: no readable {MANIFEST_NAME} to sign") from exc
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
            if signature is not None:
                self.fs.pipe_file(f"{staging}/{SIGNATURE_NAME}", signature)
            self.fs.mv(staging, final, recursive=True)
        except BaseException:
            if self.fs.exists(staging):
                self.fs.rm(staging, recursive=True)
            raise
        if set_latest:
            self.set_latest(kind, version)
        return self.uri(kind, version)

    def set_latest(self, kind: str, version: str, *, previous: str | None = None) -> None:
        """Point ``kind/LATEST`` at an existing version.

        ``kind/PREVIOUS`` then names the version LATEST held before (unchanged when LATEST
        already named ``version``); ``previous`` overrides that (a failed ship restoring
        both pointers). `recall release rollback` reads PREVIOUS.
        """
        if not self.exists(kind, version):
            raise ArtifactNotFound(f"{kind}/{version} is not in {self.root}")
        replaced = self.latest_or_none(kind)
        if previous is None and replaced != version:
            previous = replaced
        if previous:
            self._write_pointer(kind, PREVIOUS, previous + "\n")
        self._write_pointer(kind, LATEST, version + "\n")

    def _write_pointer(self, kind: str, name: str, text: str) -> None:
        """Replace ``kind/name`` atomically (temporary file, then rename over it)."""
        self.fs.makedirs(self._path(kind), exist_ok=True)
        tmp = self._path(kind, f".{name}.{secrets.token_hex(4)}")
        self.fs.pipe_file(tmp, text.encode())
        self.fs.mv(tmp, self._path(kind, name))

    def latest_or_none(self, kind: str) -> str | None:
        """The LATEST version of ``kind``, or None when nothing is published."""
        try:
            return self.latest(kind)
        except ArtifactNotFound:
            return None

    def previous(self, kind: str) -> str | None:
        """The version LATEST named before its last move (``kind/PREVIOUS``), or None."""
        pointer = self._path(kind, PREVIOUS)
        if not self.fs.exists(pointer):
            return None
        return check_version(self.fs.cat_file(pointer).decode().strip())

    def pin(self, kind: str, version: str, *, reason: str, by: str | None = None) -> Pin:
        """Hold ``kind`` at an existing ``version`` until `unpin` (durable: a file in the
        store, so every server, pipeline run and CLI sees it). Replaces any earlier pin.

        Raises:
            ArtifactNotFound: the version is not in the store.
            InvalidArtifact: ``reason`` is empty (a pin must say why).
        """
        if not reason.strip():
            raise InvalidArtifact("a pin needs a reason (who reads it later must know why)")
        if not self.exists(kind, version):
            raise ArtifactNotFound(f"{kind}/{version} is not in {self.root}")
        record = Pin(
            version=version,
            reason=reason.strip(),
            by=by or _operator(),
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        self._write_pointer(kind, PIN, json.dumps(asdict(record)) + "\n")
        return record

    def unpin(self, kind: str) -> Pin | None:
        """Remove the pin of ``kind``; the pin removed, or None when there was none."""
        current = self.pinned(kind)
        if current is not None:
            self.fs.rm(self._path(kind, PIN))
        return current

    def pinned(self, kind: str) -> Pin | None:
        """The pin of ``kind``, or None. Raises InvalidArtifact if the PIN file is damaged
        (a reader must not silently ignore an operator's hold)."""
        pointer = self._path(kind, PIN)
        if not self.fs.exists(pointer):
            return None
        text = self.fs.cat_file(pointer).decode()
        try:
            doc = json.loads(text)
            record = Pin(
                version=check_version(str(doc["version"])),
                reason=str(doc.get("reason", "")),
                by=str(doc.get("by", "")),
                at=str(doc.get("at", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArtifact(f"{kind}/{PIN} in {self.root} is not a valid pin: {exc}") from exc
        return record

    def target(self, kind: str) -> str:
        """The version servers should serve: the pinned one if any, else LATEST.
        Raises ArtifactNotFound when neither exists."""
        held = self.pinned(kind)
        return held.version if held else self.latest(kind)

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
        return sorted(n for n in names if _VERSION_RE.fullmatch(n) and n not in _POINTERS)

    def resolve(self, kind: str, version: str | None) -> str:
        """``version`` itself, or the LATEST version when ``version`` is None or empty."""
        return check_version(version) if version else self.latest(kind)

    def local_dir(self, kind: str, version: str) -> Path:
        """A local directory holding the artifact (downloaded into the cache if remote).

        With trusted keys, the local copy's manifest signature is checked first.

        Raises:
            ArtifactNotFound: no such version.
            UntrustedArtifact: trusted keys are set and the signature is absent or bad.
        """
        if not self.exists(kind, version):
            raise ArtifactNotFound(f"{kind}/{version} is not in {self.root}")
        if self.is_local:
            target = Path(self._path(kind, version))
        else:
            target = self._cache_dir / kind / version
            if not target.exists():
                partial = target.with_name(f".{version}.{secrets.token_hex(4)}")
                self.fs.get(self._path(kind, version) + "/", str(partial) + "/", recursive=True)
                partial.rename(target)
        if self.trusted_keys is not None:
            self.trusted_keys.verify_dir(target, f"{kind}/{version}")
        return target

    def verify_signature(self, kind: str, version: str, trusted_keys: TrustedKeys) -> str:
        """Check ``kind/version``'s manifest signature in the store itself, reading only
        the manifest and ``manifest.sig`` (no download of the artifact). Returns the key id.

        Raises:
            ArtifactNotFound: no such version.
            UntrustedArtifact: unsigned, signed by an untrusted key, or not matching.
        """
        if not self.exists(kind, version):
            raise ArtifactNotFound(f"{kind}/{version} is not in {self.root}")
        base = self._path(kind, version)
        try:
            manifest = self.fs.cat_file(f"{base}/{MANIFEST_NAME}")
        except FileNotFoundError as exc:
            raise InvalidArtifact(f"{kind}/{version}: no {MANIFEST_NAME}") from exc
        sig_path = f"{base}/{SIGNATURE_NAME}"
        signature = self.fs.cat_file(sig_path) if self.fs.exists(sig_path) else None
        return trusted_keys.verify(manifest, signature, f"{kind}/{version}")


def split_uri(uri: str) -> tuple[str, str, str]:
    """``<root>/<kind>/<version>`` → (root, kind, version)."""
    root, kind, version = uri.rstrip("/").rsplit("/", 2)
    return root, kind, check_version(version)


def open_uri(uri: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding the artifact at ``uri`` (what pipeline tasks pass around)."""
    root, kind, version = split_uri(uri)
    return ArtifactStore(root, cache_dir=cache_dir).local_dir(kind, version)
