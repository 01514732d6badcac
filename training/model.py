"""The two towers: string id → L2-normalised embedding.

Both towers are plain Keras models taking a ``[batch]`` string tensor of external ids and
returning a ``[batch, embedding_dim]`` float32 tensor of unit norm, so a dot product of a
user and an item vector is their cosine similarity. Unknown ids map to one shared
out-of-vocabulary row.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def build_tower(vocabulary: Sequence[str], embedding_dim: int, name: str) -> keras.Sequential:
    """An id tower: StringLookup (1 OOV row) → Embedding → UnitNormalization."""
    return keras.Sequential(
        [
            keras.layers.StringLookup(
                vocabulary=list(vocabulary),
                mask_token=None,
                num_oov_indices=1,
                name=f"{name}_lookup",
            ),
            keras.layers.Embedding(
                input_dim=len(vocabulary) + 1,
                output_dim=embedding_dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.1),
                name=f"{name}_embedding",
            ),
            keras.layers.UnitNormalization(name=f"{name}_l2"),
        ],
        name=name,
    )
