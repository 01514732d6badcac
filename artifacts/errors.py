"""Exception hierarchy for artifact handling."""


class ArtifactError(Exception):
    """Base class: an artifact could not be published, found or trusted."""


class ArtifactNotFound(ArtifactError):
    """No such artifact kind/version in the store (or no LATEST pointer yet)."""


class ChecksumMismatch(ArtifactError):
    """A file's size or SHA-256 differs from what its manifest lists, or a file is missing."""


class InvalidArtifact(ArtifactError):
    """An artifact directory is malformed (unreadable manifest, wrong schema, bad name)."""


class UntrustedArtifact(ArtifactError):
    """A reader with trusted keys met an unsigned artifact, a malformed signature, a key
    outside its trusted set, or a signature that does not match the manifest."""
