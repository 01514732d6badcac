"""Which model an index was built from, for readers that must not import ``serving``.

The index manifest's full schema lives with the index (``serving.index.artifact``,
which imports Faiss). Training-side processes such as the refresher only need an index's
lineage, so they read the manifest through this tolerant typed view: the fields below
are validated, the others are left to the schema's owner.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from artifacts.checksums import MANIFEST_NAME
from artifacts.errors import InvalidArtifact
from artifacts.store import ArtifactStore

INDEX_KIND = "indexes"


class IndexLineage(BaseModel):
    """The part of an index manifest that ties it to a model (schema ``recall.index/v1``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    index_version: str
    model_version: str


def index_lineage(store: ArtifactStore, index_version: str | None = None) -> IndexLineage:
    """The lineage of ``index_version`` (LATEST when None).

    Raises:
        ArtifactNotFound: no such index, or none published yet.
        InvalidArtifact: its manifest is unreadable or lacks the fields above.
    """
    version = store.resolve(INDEX_KIND, index_version)
    path = store.local_dir(INDEX_KIND, version) / MANIFEST_NAME
    try:
        return IndexLineage.model_validate_json(path.read_text())
    except (OSError, ValidationError) as exc:
        raise InvalidArtifact(f"{path}: not a readable index manifest ({exc})") from exc
