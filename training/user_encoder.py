"""Run an exported user tower: (user id, recent items) → user vector, for fresh vectors.

The refresher worker and the hourly refresh use this to re-encode users whose history
changed since training, without retraining. TensorFlow loads here, on the training side;
the recall server never imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from artifacts.checksums import MANIFEST_NAME

PAD = ""


class UserEncoder:
    """A loaded ``user_tower`` SavedModel of one model artifact."""

    def __init__(self, module: object, model_version: str, history_length: int, dim: int) -> None:
        # Keep the loaded module itself: its ``serve`` function does not own the variables.
        self._module = module
        self._serve = module.serve  # type: ignore[attr-defined]
        self.model_version = model_version
        self.history_length = history_length
        self.dim = dim

    @classmethod
    def load(cls, model_dir: Path) -> UserEncoder:
        """Load from a verified local model artifact directory."""
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
        tower = tf.saved_model.load(str(model_dir / "user_tower"))
        return cls(
            tower,
            str(manifest["model_version"]),
            int(manifest.get("history_length", 0)),
            int(manifest["embedding_dim"]),
        )

    def encode(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        """[B, dim] float32 unit vectors.

        Args:
            user_ids: [B] external ids (unknown ones use the tower's unknown-user row).
            histories: per user, item ids most recent first, any length (the encoder keeps
                the first ``history_length``); unknown items are ignored by the tower.
        """
        if len(user_ids) != len(histories):
            raise ValueError(f"{len(user_ids)} user ids but {len(histories)} histories")
        if not user_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = tf.constant([str(u) for u in user_ids])
        if self.history_length == 0:  # an ids-only model exported before histories existed
            return np.asarray(self._serve(ids), dtype=np.float32)
        width = max(1, min(self.history_length, max(len(h) for h in histories)))
        padded = [[*list(h[:width]), *([PAD] * (width - len(h[:width])))] for h in histories]
        out = self._serve(ids, tf.constant(padded, dtype=tf.string))
        return np.asarray(out, dtype=np.float32)
