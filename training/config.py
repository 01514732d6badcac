"""Hyper-parameters of one training run (validated; unknown keys are an error)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """What `recall train` and the training DAG task accept."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(32, ge=2, le=1024, description="Output size of both towers.")
    epochs: int = Field(20, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(
        1024, ge=8, description="Interactions per step; also the number of in-batch negatives."
    )
    learning_rate: float = Field(0.01, gt=0, description="Adam learning rate.")
    temperature: float = Field(0.1, gt=0, description="Softmax temperature on cosine scores.")
    logq_correction: bool = Field(
        True,
        description="Subtract log item frequency from in-batch logits (popularity de-biasing).",
    )
    eval_k: list[int] = Field([10, 50], description="k values for recall@k on the held-out split.")
    seed: int = Field(0, description="Seed for initialisation and shuffling.")
