"""`recall evaluate`: run the protocols, the baselines and the model, both paths, one report.

For each protocol (P1, P2) the harness makes one split and evaluates on it, in this order:

1. Pop, ItemKNN and EASE (λ chosen on the split's tuning part by NDCG@10) in numpy;
2. for each model variant: train with the product's trainer on the training part, then
   - *exact*: top-k of the artifact's user·item inner products, masked items removed;
   - *served*: the same model through Redis + IVF-PQ index + a recall server over gRPC.

Every method is scored on the same users with the same masks, overall and on the cold
slice (users with ≤ ``cold_max`` training interactions).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from catalogue.config import DuplicateConfig
from evaluation import baselines as bl
from evaluation import content as cb
from evaluation.catalog import Catalog
from evaluation.metrics import KS, hits_from_lists, hits_from_rows, mean_metrics, per_user_metrics
from evaluation.model_under_test import VectorScorer, train_model, write_training_data
from evaluation.ranking import ScoreFn, rank_users
from evaluation.served import recall_through_server
from evaluation.splits import Split, make_split
from training.data.schema import Dataset, load_dataset
from training.tasks import merge_duplicate_items

COLD_MAX_TRAIN = 5
"""Users with at most this many training interactions form the cold-user slice."""
TUNING_METRIC = "ndcg@10"


@dataclass(frozen=True)
class EvaluationConfig:
    """What one `recall evaluate` run does."""

    data_dir: Path
    out_dir: Path
    protocols: tuple[str, ...] = ("p1", "p2")
    variants: tuple[str, ...] = ("default",)
    epochs: int | None = None  # None: the training config's default
    served: bool = True
    seed: int = 0
    ks: tuple[int, ...] = KS
    cold_max: int = COLD_MAX_TRAIN
    ease_lambdas: tuple[float, ...] = bl.EASE_LAMBDAS
    min_recall: float = 0.0  # the served index's quality gate; 0 = measure, never refuse
    redis_url: str | None = None  # None: start a throwaway Redis


@dataclass(frozen=True)
class MethodResult:
    """One method's mean metrics on one protocol, overall and on the cold slice."""

    protocol: str
    method: str  # "Pop", "ItemKNN", "EASE", "two-tower" or "two-tower[variant]"
    path: str  # "exact" or "served"
    metrics: dict[str, float]
    cold: dict[str, float]


@dataclass
class ModelRun:
    """One trained variant on one protocol: provenance and what the served path saw."""

    protocol: str
    variant: str
    model_version: str = ""
    error: str = ""
    train_seconds: float = 0.0
    curve: list[dict[str, float | str]] = field(default_factory=list)
    curve_source: str = ""  # "artifact" (training_curve.json) or "callback" (loss only)
    served: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProtocolSummary:
    """Sizes of one protocol's split and the chosen EASE λ."""

    protocol: str
    train_interactions: int
    test_interactions: int
    masked_interactions: int
    test_users: int
    cold_users: int
    items: int
    ease_lambda: float
    ease_tuning: dict[float, float]  # λ → tuning NDCG@10


@dataclass
class EvaluationResult:
    config: EvaluationConfig
    started_at: str
    seconds: float = 0.0
    protocols: list[ProtocolSummary] = field(default_factory=list)
    results: list[MethodResult] = field(default_factory=list)
    runs: list[ModelRun] = field(default_factory=list)


@dataclass(frozen=True)
class Callbacks:
    """Progress events for a front end; every one is optional."""

    stage: Callable[[str], None] | None = None
    epoch: Callable[[int, int, float], None] | None = None
    served: Callable[[int, int], None] | None = None

    def say(self, text: str) -> None:
        if self.stage:
            self.stage(text)


@dataclass(frozen=True)
class _Eval:
    """One split's test users, masks and relevance, as catalogue rows/columns."""

    split: Split
    catalog: Catalog
    users: list[str]
    rows: np.ndarray  # [n_users] catalogue rows
    masked: np.ndarray  # [n_users, n_items] 0/1
    relevant: np.ndarray  # [n_users, n_items] 0/1
    cold: np.ndarray  # [n_users] bool

    @classmethod
    def of(cls, split: Split, catalog: Catalog, cold_max: int) -> _Eval:
        users = split.test_users
        train_counts = split.train.groupby("user_id").size()
        n_train = train_counts.reindex(users, fill_value=0).to_numpy()
        return cls(
            split,
            catalog,
            users,
            catalog.user_rows(users),
            catalog.matrix(split.masked, users),
            catalog.matrix(split.test, users),
            n_train <= cold_max,
        )

    def score_rows(self, ranked: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
        return per_user_metrics(hits_from_rows(ranked, self.relevant), self.n_relevant, ks)

    def score_lists(self, ranked: list[list[str]], ks: tuple[int, ...]) -> dict[str, np.ndarray]:
        relevant = [
            {self.catalog.item_ids[c] for c in np.flatnonzero(row)} for row in self.relevant
        ]
        hits = hits_from_lists(ranked, relevant, max(ks))
        return per_user_metrics(hits, self.n_relevant, ks)

    @property
    def n_relevant(self) -> np.ndarray:
        return self.relevant.sum(axis=1).astype(np.int64)

    def masked_ids(self) -> list[list[str]]:
        return [[self.catalog.item_ids[c] for c in np.flatnonzero(row)] for row in self.masked]


def _exact(ev: _Eval, score_fn: ScoreFn, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    return ev.score_rows(rank_users(score_fn, ev.rows, ev.masked, max(ks)), ks)


def choose_ease_lambda(
    split: Split, catalog: Catalog, lambdas: tuple[float, ...]
) -> tuple[float, dict[float, float]]:
    """The λ with the best NDCG@10 on ``split.tuning`` (first on ties), and every score."""
    if split.tuning is None or split.tuning.test.empty:
        return bl.EASE_LAMBDAS[2], {}
    ev = _Eval.of(split.tuning, catalog, 0)
    x = catalog.matrix(split.tuning.train)
    scores = {
        lam: mean_metrics(_exact(ev, bl.ItemItemScorer(x, bl.ease_weights(x, lam)), (10,)))[
            TUNING_METRIC
        ]
        for lam in lambdas
    }
    return max(lambdas, key=lambda lam: scores[lam]), scores


def _result(
    protocol: str, method: str, path: str, per_user: dict[str, np.ndarray], cold: np.ndarray
) -> MethodResult:
    overall, cold_only = mean_metrics(per_user), mean_metrics(per_user, cold)
    return MethodResult(protocol, method, path, overall, cold_only)


def _model_name(variant: str, variants: tuple[str, ...]) -> str:
    return "two-tower" if variants == ("default",) else f"two-tower[{variant}]"


def _evaluate_variant(
    ev: _Eval,
    dataset: Dataset,
    config: EvaluationConfig,
    variant: str,
    work: Path,
    callbacks: Callbacks,
    out: EvaluationResult,
) -> None:
    protocol = ev.split.protocol
    run = ModelRun(protocol, variant)
    out.runs.append(run)
    data_dir = work / f"{protocol}-{variant}-data"
    write_training_data(ev.split.train, dataset, data_dir)
    artifact_root = str(work / "artifacts")
    losses: list[dict[str, float | str]] = []

    def on_epoch(epoch: int, total: int, loss: float) -> None:
        losses.append({"epoch": float(epoch), "loss": float(loss)})
        if callbacks.epoch:
            callbacks.epoch(epoch, total, loss)

    callbacks.say(f"{protocol}: training two-tower [{variant}] on {len(ev.split.train):,} rows")
    started = time.perf_counter()
    try:
        model = train_model(data_dir, artifact_root, variant, config.epochs, config.seed, on_epoch)
    except ValidationError as exc:
        run.error = f"training config rejected: {exc.errors()[0].get('msg', exc)}"
        callbacks.say(f"{protocol}: variant {variant} skipped ({run.error})")
        return
    run.train_seconds = round(time.perf_counter() - started, 1)
    run.model_version = model.model_version
    run.curve, run.curve_source = (model.curve, "artifact") if model.curve else (losses, "callback")
    name = _model_name(variant, config.variants)
    scorer = VectorScorer.from_artifact(model.artifact, ev.catalog)
    out.results.append(_result(protocol, name, "exact", _exact(ev, scorer, config.ks), ev.cold))
    if not config.served:
        return
    callbacks.say(f"{protocol}: serving [{variant}] — index, Redis, gRPC for {len(ev.users)} users")
    answers = recall_through_server(
        model.uri,
        artifact_root,
        ev.users,
        ev.masked_ids(),
        max(config.ks),
        work,
        min_recall=config.min_recall,
        redis_url=config.redis_url,
        on_progress=callbacks.served,
    )
    run.served = {
        "index_version": answers.index_version,
        "factory": answers.index.factory,
        "nprobe": answers.index.nprobe,
        "ann_recall@10": answers.index.quality.recall,
        "sources": answers.source_counts(),
        "seconds": round(answers.seconds, 2),
    }
    per_user = ev.score_lists(answers.ranked, config.ks)
    out.results.append(_result(protocol, name, "served", per_user, ev.cold))


def _content_baselines(
    ev: _Eval, dataset: Dataset, x: np.ndarray, seed: int
) -> list[tuple[str, ScoreFn]]:
    """P3's baselines (evaluation/content.py) over the catalogue's content vectors."""
    content = cb.content_matrix(dataset.items, ev.catalog)
    knn = cb.ContentKnnScorer(x, content)
    pop = cb.ContentPopScorer(cb.ridge_popularity(content, x.sum(axis=0)))
    row_of = {int(r): i for i, r in enumerate(ev.rows)}
    return [
        ("Random", cb.RandomScorer(ev.catalog.n_items, seed)),
        ("Content-kNN", knn),
        ("Content-pop", pop),
        ("Content-kNN+pop", cb.SumScorer(knn, pop, ev.masked, row_of)),
    ]


def _evaluate_protocol(
    protocol: str,
    dataset: Dataset,
    catalog: Catalog,
    config: EvaluationConfig,
    work: Path,
    callbacks: Callbacks,
    out: EvaluationResult,
) -> None:
    split = make_split(protocol, dataset.interactions, config.seed)
    ev = _Eval.of(split, catalog, config.cold_max)
    callbacks.say(
        f"{protocol}: {len(split.train):,} train / {len(split.test):,} test interactions, "
        f"{len(ev.users)} test users ({int(ev.cold.sum())} cold)"
    )
    x = catalog.matrix(split.train)
    methods: list[tuple[str, ScoreFn]]
    if protocol == "p3":
        callbacks.say(f"{protocol}: baselines (random, content-kNN, content-popularity)")
        lam, tuning = float("nan"), dict[float, float]()
        methods = _content_baselines(ev, dataset, x, config.seed)
    else:
        callbacks.say(f"{protocol}: baselines (Pop, ItemKNN, EASE λ ∈ {list(config.ease_lambdas)})")
        lam, tuning = choose_ease_lambda(split, catalog, config.ease_lambdas)
        methods = [
            ("Pop", bl.PopScorer(bl.popularity(x))),
            ("ItemKNN", bl.ItemItemScorer(x, bl.itemknn_weights(x))),
            ("EASE", bl.ItemItemScorer(x, bl.ease_weights(x, lam))),
        ]
    for name, score_fn in methods:
        per_user = _exact(ev, score_fn, config.ks)
        out.results.append(_result(protocol, name, "exact", per_user, ev.cold))
    out.protocols.append(
        ProtocolSummary(
            protocol,
            len(split.train),
            len(split.test),
            len(split.masked),
            len(ev.users),
            int(ev.cold.sum()),
            catalog.n_items,
            lam,
            tuning,
        )
    )
    for variant in config.variants:
        _evaluate_variant(ev, dataset, config, variant, work, callbacks, out)


def canonical_dataset(dataset: Dataset) -> Dataset:
    """``dataset`` with duplicate items folded into their canonical ids, as training does
    (training.tasks.merge_duplicate_items), before any split: every method then ranks the
    ids the served model knows, and a held-out copy of a merged item is that item. A user
    who interacted with two copies keeps the earliest interaction only."""
    merged, canonical = merge_duplicate_items(dataset, DuplicateConfig())
    if not canonical.groups:
        return merged
    interactions = (
        merged.interactions.sort_values("timestamp", kind="stable")
        .drop_duplicates(["user_id", "item_id"])
        .sort_index()
        .reset_index(drop=True)
    )
    return dataclasses.replace(merged, interactions=interactions)


def run_evaluation(
    config: EvaluationConfig, callbacks: Callbacks | None = None
) -> EvaluationResult:
    """Run every protocol and variant of ``config``; write nothing (see evaluation.report).

    Raises:
        DataFormatError: ``config.data_dir`` breaks the data format.
        ValueError: an unknown protocol; KeyError: an unknown variant.
    """
    callbacks = callbacks or Callbacks()
    started = time.perf_counter()
    out = EvaluationResult(config, pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
    dataset = canonical_dataset(load_dataset(config.data_dir))
    catalog = Catalog.from_interactions(dataset.interactions)
    with tempfile.TemporaryDirectory(prefix="recall-evaluate-") as tmp:
        for protocol in config.protocols:
            _evaluate_protocol(protocol, dataset, catalog, config, Path(tmp), callbacks, out)
    out.seconds = round(time.perf_counter() - started, 1)
    return out
