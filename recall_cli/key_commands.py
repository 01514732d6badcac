"""`recall keys generate|id|sign|verify`: Ed25519 keys for signed manifests
(artifacts/signing.py; operating them: README "Signed artifacts", docs/runbook.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from recall_cli import paths
from recall_cli.output import ArtifactRoot, console, friendly_errors

keys_app = typer.Typer(help="Signing keys for artifact manifests.", no_args_is_help=True)

KINDS = ("indexes", "models")
Kind = Annotated[str, typer.Option(help="Artifact kind: indexes or models.")]


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return kind


@keys_app.command("generate")
@friendly_errors
def generate(
    out: Annotated[Path, typer.Option(help="Directory for <name>.key and <name>.pub.")],
    name: Annotated[str, typer.Option(help="File name stem of the pair.")] = "recall-signing",
) -> None:
    """Make a new Ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub (public)."""
    from artifacts.signing import generate_keypair

    pair = generate_keypair(out, name)
    console.print(f"key id {pair.key_id}", soft_wrap=True)
    console.print(f"  private {pair.private_key}  → RECALL_SIGNING_KEY_FILE", soft_wrap=True)
    console.print(f"  public  {pair.public_key}  → RECALL_TRUSTED_KEYS_DIR", soft_wrap=True)


@keys_app.command("id")
@friendly_errors
def key_id_of(
    key_file: Annotated[Path, typer.Argument(help="A public (.pub) or private (.key) PEM file.")],
) -> None:
    """Print the key id that signatures and refusals name for KEY_FILE."""
    from artifacts.signing import key_id, load_private_key, load_public_key

    text = key_file.read_bytes() if key_file.is_file() else b""
    if b"PRIVATE KEY" in text:
        console.print(key_id(load_private_key(key_file).public_key()))
    else:
        console.print(key_id(load_public_key(key_file)))


@keys_app.command("sign")
@friendly_errors
def sign(
    version: Annotated[str, typer.Argument(help="Artifact version to sign.")],
    kind: Kind = "indexes",
    key: Annotated[
        Path | None, typer.Option(help="Private key (default: $RECALL_SIGNING_KEY_FILE).")
    ] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
) -> None:
    """Sign an already published artifact (one made before signing was switched on, or
    re-signed with a new key during a rotation); replaces its manifest.sig."""
    from artifacts.checksums import MANIFEST_NAME, SIGNATURE_NAME
    from artifacts.errors import ArtifactNotFound
    from artifacts.signing import SIGNING_KEY_ENV, ManifestSigner, SigningKeyError
    from artifacts.store import ArtifactStore

    _check_kind(kind)
    key_path = key or (
        Path(os.environ[SIGNING_KEY_ENV]) if os.environ.get(SIGNING_KEY_ENV) else None
    )
    if key_path is None:
        raise SigningKeyError(f"no signing key: pass --key or set {SIGNING_KEY_ENV}")
    signer = ManifestSigner.from_file(key_path)
    store = ArtifactStore(artifact_root)
    if not store.exists(kind, version):
        raise ArtifactNotFound(f"{kind}/{version} is not in {store.root}")
    base = store.uri(kind, version)
    signature = signer.signature_bytes(store.fs.cat_file(f"{base}/{MANIFEST_NAME}"))
    # Write beside, then rename: a reader never sees half a signature file.
    tmp = f"{base}/.{SIGNATURE_NAME}.tmp"
    store.fs.pipe_file(tmp, signature)
    store.fs.mv(tmp, f"{base}/{SIGNATURE_NAME}")
    console.print(f"signed {kind}/{version} with key {signer.key_id}")


@keys_app.command("verify")
@friendly_errors
def verify(
    version: Annotated[
        str | None, typer.Argument(help="Artifact version (default: LATEST).")
    ] = None,
    kind: Kind = "indexes",
    trusted_keys_dir: Annotated[
        Path | None,
        typer.Option(help="Public keys to trust (default: $RECALL_TRUSTED_KEYS_DIR)."),
    ] = None,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
) -> None:
    """Check an artifact's signature as a server would: an index and the model it was
    built from must both be signed by a trusted key. Exit 1 (with the reason) otherwise."""
    from artifacts.checksums import MANIFEST_NAME
    from artifacts.signing import SigningKeyError, TrustedKeys
    from artifacts.store import ArtifactStore

    _check_kind(kind)
    directory = trusted_keys_dir or os.environ.get("RECALL_TRUSTED_KEYS_DIR")
    if not directory:
        raise SigningKeyError(
            "no trusted keys: pass --trusted-keys-dir or set RECALL_TRUSTED_KEYS_DIR"
        )
    trusted = TrustedKeys.from_dir(Path(directory))
    store = ArtifactStore(artifact_root)
    version = store.resolve(kind, version)
    signed_by = store.verify_signature(kind, version, trusted)
    console.print(f"{kind}/{version}: signed by trusted key {signed_by}")
    if kind == "indexes":
        from serving.index.artifact import IndexManifest

        manifest = IndexManifest.model_validate_json(
            store.fs.cat_file(f"{store.uri(kind, version)}/{MANIFEST_NAME}")
        )
        model = manifest.model_version
        console.print(
            f"models/{model}: signed by trusted key "
            f"{store.verify_signature('models', model, trusted)}"
        )
