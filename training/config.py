"""Hyper-parameters of one training run (validated; unknown keys are an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from recall_settings import defaults
from training.features import FeatureSpec


class TrainConfig(BaseModel):
    """What `recall train`, the training DAG task and `recall evaluate` accept.

    Epochs are chosen on a temporal validation split (each user's second-to-last
    interaction) with early stopping; the published model is then refitted on all
    interactions for that many epochs (``final_fit="all"``).
    """

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(64, ge=2, le=1024, description="Output size of both towers.")
    id_embedding_dim: int = Field(
        64, ge=2, le=1024, description="Item/user id embedding size (item table shared)."
    )
    feature_embedding_dim: int = Field(16, ge=1, le=256, description="Per-feature embedding.")
    hidden_units: list[int] = Field(
        default_factory=list, description="Hidden ReLU layers of each tower's head."
    )
    normalize_items: bool = Field(
        True,
        description="L2-normalise item vectors (cosine scores); off lets an item's norm "
        "carry its overall appeal (scores are then inner products).",
    )
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    use_history: bool = Field(True, description="User tower reads the user's recent items.")
    use_user_id: bool = Field(True, description="User tower has a user id embedding.")
    use_item_features: bool = Field(True, description="Item tower reads the item columns.")
    use_user_features: bool = Field(True, description="User tower reads the user columns.")
    history_length: int = Field(50, ge=1, le=1000, description="Most recent items read.")
    history_context: Literal["before", "all_other", "mixed"] = Field(
        "before",
        description="Training history of an interaction: the items before it ('before': "
        "next-item prediction), all the user's other items ('all_other': the user's "
        "taste as a set, for held-out items spread over time), or either, drawn per "
        "example ('mixed').",
    )
    history_dropout: float = Field(
        0.0, ge=0, lt=1, description="Share of history items hidden per training example."
    )
    history_decay: float = Field(
        0.98, gt=0, le=1, description="Initial recency weight ratio between positions."
    )
    item_bias: bool = Field(
        False,
        description="Learn a per-item score bias from the item tower's inputs (popularity "
        "that content predicts: what ranks items with no interactions). It is served as one "
        "extra dimension: item vectors end in temperature·bias, user vectors in 1.",
    )
    item_id_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of training items whose id embedding is replaced by the unknown "
        "row, so the item's features learn to stand in for it: what an item with no "
        "interactions (no trained id embedding) is embedded from.",
    )
    user_id_dropout: float = Field(
        0.3, ge=0, lt=1, description="Share of examples trained as an unknown user."
    )
    epochs: int = Field(
        defaults.EPOCHS.default,
        ge=defaults.EPOCHS.minimum,
        le=defaults.EPOCHS.maximum,
        description="Most passes over the data (early stopping may stop sooner).",
    )
    patience: int = Field(3, ge=1, description="Epochs without validation gain before stopping.")
    early_stopping_metric: str = Field(
        "val_recall@10", description="Validation metric maximised by early stopping."
    )
    final_fit: Literal["all", "holdout"] = Field(
        "all",
        description="Publish a refit on all interactions ('all') or the model trained "
        "without each user's last interaction ('holdout').",
    )
    batch_size: int = Field(1024, ge=8, description="Interactions per step.")
    learning_rate: float = Field(0.003, gt=0, description="Adam learning rate.")
    temperature: float = Field(0.05, gt=0, description="Softmax temperature on cosine scores.")
    negatives: Literal["auto", "full", "in_batch", "mixed"] = Field(
        "auto",
        description="Softmax over the whole catalogue, in-batch negatives, or in-batch plus "
        "uniform samples; auto = full up to full_softmax_max_items items, else mixed.",
    )
    full_softmax_max_items: int = Field(20_000, ge=1)
    uniform_negatives: int = Field(
        1024, ge=0, description="Uniformly sampled negatives per batch (mixed)."
    )
    logq_correction: bool = Field(
        True,
        description="Subtract log item frequency from sampled logits (popularity de-biasing).",
    )
    linear_rank: int = Field(
        0,
        ge=0,
        le=1024,
        description="Rank of the closed-form linear branch (low-rank EASE, "
        "training/linear_branch.py) added to both towers after training; 0 turns it off. "
        "Served vectors gain this many dimensions.",
    )
    linear_l2: float = Field(500.0, gt=0, description="The linear branch's EASE λ.")
    linear_weight: float = Field(
        2.0,
        gt=0,
        description="Weight of the learnt towers' per-user z-scored scores against the "
        "closed-form branches' (linear and kernel, weight 1 each).",
    )
    linear_history_length: int = Field(
        1000,
        ge=1,
        le=1000,
        description="Most recent items the closed-form branches read (the learnt towers "
        "read history_length); at most the Redis history cap.",
    )
    kernel_max_users: int = Field(
        0,
        ge=0,
        le=8192,
        description="Anchor users of the closed-form kernel branch (∞-AE: kernel ridge "
        "regression with a ReLU network's NTK, training/kernel_branch.py) added to both "
        "towers after training: every training user up to this many, a seeded sample "
        "above it. Served vectors gain min(this, users) dimensions; 0 turns it off.",
    )
    kernel_depth: int = Field(
        5, ge=1, le=8, description="Hidden layers of the kernel branch's ReLU network."
    )
    kernel_reg: float = Field(
        0.5,
        gt=0,
        description="The kernel branch's ridge, relative to the kernel's mean diagonal.",
    )
    kernel_item_features: list[str] = Field(
        default_factory=list,
        description="Item feature columns (of features.item) whose per-user profile joins "
        "the kernel branch's input: the share of the user's items with each value. A "
        "column the catalogue lacks is left out.",
    )
    kernel_feature_scale: float = Field(
        10.0, gt=0, description="Scale of the feature profiles against the 0/1 item row."
    )
    linear_max_items: int = Field(
        20_000,
        ge=1,
        description="Largest catalogue the closed-form branches are fitted for (linear: "
        "O(n³) time, O(n²) memory; kernel: an items × anchors table in the towers); a "
        "larger one trains without them and says so in the log.",
    )
    content_prior_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Weight of the content prior (training/content_prior.py: the item's "
        "popularity as a ridge regression on its features predicts it, z-scored) against "
        "the learnt towers' per-user z-scored score; what ranks items without interactions "
        "by how popular their kind is. 0 turns it off; needs item features. Served vectors "
        "gain one dimension.",
    )
    content_prior_l2: float = Field(1.0, gt=0, description="The content prior's ridge weight.")
    eval_k: list[int] = Field([10, 50, 100], description="Cut-offs for held-out metrics.")
    seed: int = Field(0, description="Seed for initialisation, dropout and shuffling.")
    verbose: int = Field(0, ge=0, le=2, description="Keras progress output (1 = bar).")

    @property
    def input_history_length(self) -> int:
        """History items the exported user tower reads: the learnt part's
        ``history_length``, or the closed-form branches' when one is on and longer."""
        if self.linear_rank > 0 or self.kernel_max_users > 0:
            return max(self.history_length, self.linear_history_length)
        return self.history_length


def read_train_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A TrainConfig from a YAML file (optional) with ``overrides`` (None values ignored).

    Raises:
        ValueError: the file is not a YAML mapping (pydantic.ValidationError, a ValueError,
            for unknown or out-of-range fields).
    """
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a training config must be a YAML mapping")
        values.update(loaded or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig(**values)
