"""Seeded synthetic interactions with learnable structure, in the data-directory format.

Users and items get random latent vectors in ``latent_dim`` dimensions; each user picks
items without replacement with probability ∝ exp(user·item / temperature + popularity),
so a two-tower model can recover the structure and popular items really are popular.
Same seed, same arguments → byte-identical tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Documentary")


@dataclass(frozen=True)
class SyntheticData:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


def generate(
    n_users: int = 500,
    n_items: int = 800,
    interactions_per_user: int = 20,
    latent_dim: int = 8,
    temperature: float = 0.5,
    seed: int = 0,
) -> SyntheticData:
    """Make a dataset of ``n_users * interactions_per_user`` interactions.

    Ids are ``u<n>`` and ``i<n>`` strings; timestamps are increasing per user, in seconds.
    """
    if n_users < 1 or n_items < 2:
        raise ValueError("need at least 1 user and 2 items")
    if not 1 <= interactions_per_user <= n_items:
        raise ValueError("interactions_per_user must be in 1..n_items")
    rng = np.random.default_rng(seed)
    user_f = rng.normal(size=(n_users, latent_dim)) / np.sqrt(latent_dim)
    item_f = rng.normal(size=(n_items, latent_dim)) / np.sqrt(latent_dim)
    popularity = rng.normal(scale=1.0, size=n_items)
    logits = user_f @ item_f.T / temperature + popularity  # [n_users, n_items]
    gumbel = rng.gumbel(size=logits.shape)
    # Gumbel top-k = sampling without replacement ∝ softmax(logits).
    chosen = np.argsort(-(logits + gumbel), axis=1)[:, :interactions_per_user]
    start = 1_700_000_000
    users_idx = np.repeat(np.arange(n_users), interactions_per_user)
    steps = rng.integers(60, 86_400, size=users_idx.shape)
    ts = start + np.cumsum(steps.reshape(n_users, -1), axis=1).ravel()
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users_idx],
            "item_id": [f"i{i}" for i in chosen.ravel()],
            "rating": rng.integers(1, 6, size=users_idx.shape).astype("int8"),
            "timestamp": ts.astype("int64"),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Synthetic item {i}" for i in range(n_items)],
            "year": rng.integers(1950, 2026, size=n_items).astype("int64"),
            "genres": [
                sorted(rng.choice(GENRES, size=int(rng.integers(1, 3)), replace=False).tolist())
                for _ in range(n_items)
            ],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(n_users)],
            "age": rng.integers(18, 80, size=n_users).astype("int64"),
            "gender": rng.choice(["F", "M"], size=n_users),
        }
    )
    return SyntheticData(interactions=interactions, items=items, users=users)
