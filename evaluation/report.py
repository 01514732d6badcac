"""The evaluation report: ``report.md``, ``results.json`` and PNG plots in one directory.

Plots (matplotlib, Agg backend, no display needed):
- ``metrics_<protocol>.png``: Recall/NDCG@10, Recall@50/@100 of every method and path;
- ``learning_curve_<protocol>_<variant>.png``: per-epoch loss (and validation metrics when
  the artifact carries ``training_curve.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Any

from evaluation.harness import EvaluationResult, MethodResult, ModelRun, ProtocolSummary
from evaluation.metrics import METRICS

PLOTTED = ("recall@10", "ndcg@10", "recall@50", "recall@100")
REPORT_NAME = "report.md"
RESULTS_NAME = "results.json"

PROTOCOL_TITLES = {
    "p1": "P1 — RecBole protocol (per-user random 80/10/10, train+valid masked)",
    "p2": "P2 — temporal leave-last-one-out (training items masked)",
    "p2cold": "P2-cold — P2 with a quarter of the test users cut to 5 training items",
    "p3": "P3 — cold items (10 % of the items held out of training; only they are ranked)",
}


def _ease_sentence(summary: ProtocolSummary) -> str:
    if math.isnan(summary.ease_lambda):
        return "Content baselines (evaluation/content.py); no EASE on cold items."
    return (
        f"EASE λ = {summary.ease_lambda:g}, chosen on the tuning split by NDCG@10 ("
        + ", ".join(f"{lam:g}: {v:.4f}" for lam, v in summary.ease_tuning.items())
        + ")."
    )


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.4f}"


def _commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return "unknown"
    return proc.stdout.strip() or "unknown"


def _label(r: MethodResult) -> str:
    return f"{r.method} ({r.path})" if r.method.startswith("two-tower") else r.method


def _metric_table(results: list[MethodResult], ks: tuple[int, ...], cold: bool) -> list[str]:
    names = [f"{m}@{k}" for k in ks for m in METRICS]
    lines = [
        "| method | path | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for r in results:
        values = r.cold if cold else r.metrics
        lines.append(
            f"| {r.method} | {r.path} | " + " | ".join(_fmt(values[n]) for n in names) + " |"
        )
    return lines


def plot_metrics(results: list[MethodResult], protocol: str, path: Path) -> None:
    """Grouped bars: one group per metric of :data:`PLOTTED`, one bar per method/path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(results), 1)
    for i, r in enumerate(results):
        xs = [g + i * width for g in range(len(PLOTTED))]
        ax.bar(xs, [r.metrics[m] for m in PLOTTED], width, label=_label(r))
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(PLOTTED))], list(PLOTTED))
    ax.set_ylabel("mean over test users")
    ax.set_title(PROTOCOL_TITLES.get(protocol, protocol), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(run: ModelRun, path: Path) -> None:
    """Loss per epoch (left axis) and any ``val_*`` series (right axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    stages = list(dict.fromkeys(str(row.get("stage", "")) for row in run.curve))
    val_keys = sorted({k for row in run.curve for k in row if k.startswith("val_")})
    ax2 = ax.twinx() if val_keys else None
    for stage in stages:
        rows = [row for row in run.curve if str(row.get("stage", "")) == stage]
        suffix = f" ({stage})" if stage else ""
        epochs = [float(row["epoch"]) for row in rows]
        if any("loss" in row for row in rows):
            losses = [float(row.get("loss", math.nan)) for row in rows]
            ax.plot(epochs, losses, "o-", label=f"loss{suffix}")
        if ax2 is None:
            continue
        for key in val_keys:
            values = [float(row.get(key, math.nan)) for row in rows]
            if not all(math.isnan(v) for v in values):
                ax2.plot(epochs, values, "s--", label=f"{key}{suffix}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if ax2 is not None:
        ax2.set_ylabel("validation metric")
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"{run.protocol}: two-tower [{run.variant}] {run.model_version}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _results_json(result: EvaluationResult, commit: str) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in doc["config"].items()}
    for summary in doc["protocols"]:
        summary["ease_tuning"] = {str(k): v for k, v in summary["ease_tuning"].items()}
    doc["commit"] = commit
    return doc


def write_report(result: EvaluationResult, out_dir: Path) -> Path:
    """Write report.md, results.json and the plots into ``out_dir``; returns report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = _commit()
    cfg = result.config
    (out_dir / RESULTS_NAME).write_text(
        json.dumps(_results_json(result, commit), indent=2, allow_nan=True) + "\n"
    )
    md: list[str] = [
        "# Retrieval quality report",
        "",
        f"- started {result.started_at}, took {result.seconds:.0f} s; commit `{commit}`",
        f"- data: `{cfg.data_dir}`; seed {cfg.seed}; epochs "
        f"{cfg.epochs if cfg.epochs is not None else 'training default'}; "
        f"variants: {', '.join(cfg.variants)}; served path: "
        + (f"yes (index gate: min recall {cfg.min_recall:g})" if cfg.served else "no"),
        "- metrics are means over test users; every method ranks all items with the same "
        "masked items removed (docs/quality.md defines them)",
        f"- cold users: ≤ {cfg.cold_max} training interactions",
        "",
    ]
    for summary in result.protocols:
        p = summary.protocol
        results = [r for r in result.results if r.protocol == p]
        md += [
            f"## {PROTOCOL_TITLES.get(p, p)}",
            "",
            f"{summary.train_interactions:,} training / {summary.test_interactions:,} test "
            f"interactions; {summary.masked_interactions:,} masked at test time; "
            f"{summary.test_users} test users, {summary.cold_users} of them cold; "
            f"{summary.items} items in the catalogue. " + _ease_sentence(summary),
            "",
            *_metric_table(results, cfg.ks, cold=False),
            "",
        ]
        plot = f"metrics_{p}.png"
        plot_metrics(results, p, out_dir / plot)
        md += [f"![metrics {p}]({plot})", ""]
        md += [f"### {p}: cold users ({summary.cold_users})", ""]
        if summary.cold_users:
            md += [*_metric_table(results, cfg.ks, cold=True), ""]
        else:
            md += [
                f"No test user has ≤ {cfg.cold_max} training interactions in this split "
                "(ML-100K, for one, keeps only users with ≥ 20 ratings).",
                "",
            ]
        for run in (r for r in result.runs if r.protocol == p):
            md += _run_section(run, out_dir)
    md += _ablation(result)
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(md) + "\n")
    return path


def _run_section(run: ModelRun, out_dir: Path) -> list[str]:
    lines = [f"### {run.protocol}: two-tower [{run.variant}]", ""]
    if run.error:
        return [*lines, f"Not evaluated: {run.error}", ""]
    lines.append(f"- model `{run.model_version}`, trained in {run.train_seconds:.1f} s")
    if run.served:
        s = run.served
        lines.append(
            f"- served: index `{s['index_version']}` {s['factory']} nprobe={s['nprobe']}, "
            f"ANN recall@10 vs exact {s['ann_recall@10']:.3f}; answers by source "
            f"{s['sources']}; {s['seconds']:.1f} s of BatchRecall"
        )
    if run.curve:
        name = f"learning_curve_{run.protocol}_{run.variant}.png"
        plot_learning_curve(run, out_dir / name)
        source = (
            "the artifact's training_curve.json"
            if run.curve_source == "artifact"
            else "the trainer's per-epoch loss (the artifact has no training_curve.json)"
        )
        lines += [f"- learning curve from {source}:", "", f"![learning curve]({name})"]
    return [*lines, ""]


def _ablation(result: EvaluationResult) -> list[str]:
    if len(result.config.variants) < 2:
        return []
    lines = [
        "## Ablation",
        "",
        "| protocol | variant | path | recall@10 | ndcg@10 | recall@100 | note |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for run in result.runs:
        if run.error:
            lines.append(f"| {run.protocol} | {run.variant} | – | – | – | – | {run.error} |")
            continue
        for r in result.results:
            if r.protocol == run.protocol and r.method.endswith(f"[{run.variant}]"):
                m = r.metrics
                lines.append(
                    f"| {run.protocol} | {run.variant} | {r.path} | {_fmt(m['recall@10'])} | "
                    f"{_fmt(m['ndcg@10'])} | {_fmt(m['recall@100'])} | |"
                )
    return [*lines, ""]
