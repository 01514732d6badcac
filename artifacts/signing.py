"""Ed25519 signatures over artifact manifests: who published an artifact, not only what it holds.

A manifest lists the size and SHA-256 of every other file of its artifact, so a signature
over the manifest's exact bytes covers the whole artifact: change any file and its
checksum no longer matches; change the manifest and the signature no longer matches.

The signature is detached, beside the manifest, as ``manifest.sig``::

    {"schema_id": "recall.signature/v1", "algorithm": "ed25519",
     "key_id": "3f9a1c0b7d2e4a61", "signature": "<base64 of the 64-byte signature>"}

``key_id`` is the first 16 hex digits of the SHA-256 of the raw 32-byte public key: short
enough to read in a log line, and what a refusal names so an operator knows which key to
trust or revoke. Keys are PEM files: the private key PKCS#8 (mode 0600), the public key
SubjectPublicKeyInfo. Readers accept a *set* of public keys, so a new key can be trusted
before publishers switch to it and the old one dropped afterwards (key rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from artifacts.checksums import MANIFEST_NAME, SIGNATURE_NAME
from artifacts.errors import InvalidArtifact, UntrustedArtifact

SIGNATURE_SCHEMA = "recall.signature/v1"
SIGNING_KEY_ENV = "RECALL_SIGNING_KEY_FILE"
"""Environment variable naming the private key (PEM) that publishing signs with; unset:
artifacts are published unsigned (the zero-config local default)."""
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIXES = (".pub", ".pem")
"""A trusted-keys directory holds one public key per file with one of these suffixes."""
_KEY_ID_HEX = 16


class SigningKeyError(InvalidArtifact):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:_KEY_ID_HEX]


@dataclass(frozen=True)
class KeyPairFiles:
    private_key: Path
    public_key: Path
    key_id: str


def generate_keypair(out_dir: Path, name: str = "recall-signing") -> KeyPairFiles:
    """Write a new Ed25519 key pair as ``<name>.key`` (PKCS#8 PEM, mode 0600) and
    ``<name>.pub`` (SubjectPublicKeyInfo PEM) into ``out_dir`` (created if needed).

    Raises:
        SigningKeyError: either file exists already (a key is never overwritten).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"{name}{PRIVATE_KEY_SUFFIX}"
    public_path = out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(f"{path} exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL + 0600 at creation: the private key is never readable by others, not even
    # for the moment between a write and a chmod.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPairFiles(private_path, public_path, key_id(public))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file ``path`` (unencrypted PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}, expected an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``."""
    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except ValueError as exc:
        raise SigningKeyError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}, expected an Ed25519 key")
    return key


class ManifestSigner:
    """Signs manifests with one private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def from_file(cls, path: Path) -> ManifestSigner:
        return cls(load_private_key(path))

    def signature_bytes(self, manifest: bytes) -> bytes:
        """The ``manifest.sig`` content for exactly these manifest bytes."""
        doc = {
            "schema_id": SIGNATURE_SCHEMA,
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "signature": base64.b64encode(self._key.sign(manifest)).decode("ascii"),
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    def sign_dir(self, directory: Path) -> Path:
        """Write ``manifest.sig`` beside ``directory``'s manifest. Returns its path.

        Raises:
            InvalidArtifact: the directory has no readable manifest.
        """
        try:
            manifest = (directory / MANIFEST_NAME).read_bytes()
        except OSError as exc:
            raise InvalidArtifact(f"{directory}: no readable {MANIFEST_NAME} to sign") from exc
        path = directory / SIGNATURE_NAME
        path.write_bytes(self.signature_bytes(manifest))
        return path


def signer_from_env(environ: dict[str, str] | None = None) -> ManifestSigner | None:
    """The signer of ``$RECALL_SIGNING_KEY_FILE``, or None when it is unset or empty."""
    path = (os.environ if environ is None else environ).get(SIGNING_KEY_ENV, "")
    return ManifestSigner.from_file(Path(path)) if path else None


class TrustedKeys:
    """The public keys whose signatures a reader accepts (several at once, for rotation)."""

    def __init__(self, keys: list[Ed25519PublicKey]) -> None:
        if not keys:
            raise SigningKeyError("no trusted public keys given")
        self._keys = {key_id(k): k for k in keys}

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @classmethod
    def from_dir(cls, directory: Path) -> TrustedKeys:
        """Every ``*.pub`` / ``*.pem`` file of ``directory`` (one public key each).

        Raises:
            SigningKeyError: the directory is missing, holds no key, or a file is not an
                Ed25519 public key (a typo must not silently shrink the trusted set).
        """
        if not directory.is_dir():
            raise SigningKeyError(f"trusted keys directory {directory} does not exist")
        files = sorted(p for p in directory.iterdir() if p.suffix in PUBLIC_KEY_SUFFIXES)
        if not files:
            raise SigningKeyError(
                f"trusted keys directory {directory} holds no public key "
                f"({' or '.join(PUBLIC_KEY_SUFFIXES)} files)"
            )
        return cls([load_public_key(p) for p in files])

    def verify(self, manifest: bytes, signature: bytes | None, where: str) -> str:
        """Check ``signature`` (``manifest.sig`` content, None if absent) over ``manifest``.

        Returns:
            The key id that signed.
        Raises:
            UntrustedArtifact: unsigned, malformed signature file, a key outside the
                trusted set (named by its id), or a signature that does not match.
        """
        if signature is None:
            raise UntrustedArtifact(
                f"{where} is unsigned (no {SIGNATURE_NAME}); this reader only accepts "
                f"artifacts signed by trusted keys {', '.join(self.key_ids)}"
            )
        try:
            doc = json.loads(signature)
            kid = str(doc["key_id"])
            raw = base64.b64decode(str(doc["signature"]), validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise UntrustedArtifact(f"{where}: malformed {SIGNATURE_NAME} ({exc})") from exc
        if doc.get("algorithm", "ed25519") != "ed25519":
            raise UntrustedArtifact(
                f"{where}: {SIGNATURE_NAME} uses algorithm {doc.get('algorithm')!r}, "
                "only ed25519 is accepted"
            )
        public = self._keys.get(kid)
        if public is None:
            raise UntrustedArtifact(
                f"{where} is signed by key {kid}, which is not trusted "
                f"(trusted: {', '.join(self.key_ids)})"
            )
        try:
            public.verify(raw, manifest)
        except InvalidSignature as exc:
            raise UntrustedArtifact(
                f"{where}: signature by key {kid} does not match {MANIFEST_NAME} "
                "(changed after signing?)"
            ) from exc
        return kid

    def verify_dir(self, directory: Path, where: str | None = None) -> str:
        """``verify`` on ``directory``'s manifest and signature files (``where`` names the
        artifact in messages; default the directory). Returns the key id."""
        try:
            manifest = (directory / MANIFEST_NAME).read_bytes()
        except OSError as exc:
            raise InvalidArtifact(f"{directory}: no readable {MANIFEST_NAME}") from exc
        sig_path = directory / SIGNATURE_NAME
        signature = sig_path.read_bytes() if sig_path.is_file() else None
        return self.verify(manifest, signature, where or str(directory))


def trusted_keys_from(directory: str | Path | None) -> TrustedKeys | None:
    """``TrustedKeys.from_dir`` when a directory is configured, else None (no checks)."""
    return TrustedKeys.from_dir(Path(directory)) if directory else None
