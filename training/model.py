"""The two towers: string id → L2-normalised embedding.

Both towers take a ``[batch]`` string tensor of external ids and return a
``[batch, embedding_dim]`` float32 tensor of unit norm, so a dot product of a user and an
item vector is their cosine similarity. Unknown ids map to one shared out-of-vocabulary row.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


class IdTower(keras.Model):
    """StringLookup (1 OOV row at index 0) → Embedding → UnitNormalization.

    ``call`` takes string ids (what the exported SavedModel serves); training converts ids
    to indices once with ``lookup`` and calls ``embed_indices``, keeping string hashing out
    of the training step.
    """

    def __init__(self, vocabulary: Sequence[str], embedding_dim: int, name: str) -> None:
        super().__init__(name=name)
        self.lookup = keras.layers.StringLookup(
            vocabulary=list(vocabulary), mask_token=None, num_oov_indices=1, name=f"{name}_lookup"
        )
        self.embedding = keras.layers.Embedding(
            input_dim=len(vocabulary) + 1,
            output_dim=embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.1),
            name=f"{name}_embedding",
        )
        self.normalize = keras.layers.UnitNormalization(name=f"{name}_l2")

    def embed_indices(self, indices: tf.Tensor) -> tf.Tensor:
        """[batch] int64 vocabulary indices → [batch, dim] unit vectors."""
        return self.normalize(self.embedding(indices))

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        """[batch] string ids → [batch, dim] unit vectors."""
        return self.embed_indices(self.lookup(ids))


def build_tower(vocabulary: Sequence[str], embedding_dim: int, name: str) -> IdTower:
    return IdTower(vocabulary, embedding_dim, name)
