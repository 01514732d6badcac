"""Near-duplicate detection over a large synthetic catalogue with planted duplicates.

Items get random titles (2–5 words out of 30,000 made-up words) and years 1920–2025; a
share of them get a second id whose title is rewritten the way catalogues differ
("The Ice Storm" / "Ice Storm, The" / "ICE STORM, THE (1997)" / stray punctuation), same
year. A few planted *remakes* copy a title under another year: they must stay apart.
Prints the time of ``find_duplicates`` (normalise + shingle + signatures + LSH +
confirmation + groups), the recall of planted pairs, and the merges nobody planted (split
into exact title+year coincidences of the random generator, which are duplicates by
definition, and the rest: false merges).

    .venv/bin/python -m bench.duplicates [--items 1000000] [--planted 0.02] [--method minhash]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from catalogue.config import DuplicateConfig
from catalogue.duplicates import find_duplicates
from catalogue.text import normalise_title

_SYLLABLES = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]


def _words(n: int, rng: np.random.Generator) -> np.ndarray:
    syl = np.array(_SYLLABLES)
    parts = syl[rng.integers(0, len(syl), size=(n, 3))]
    lengths = rng.integers(2, 4, size=n)
    return np.array(
        ["".join(p[:k]).capitalize() for p, k in zip(parts, lengths, strict=True)], dtype=object
    )


def _variant(title: str, year: int, how: int) -> str:
    """Another spelling of ``title`` that normalises to the same text."""
    if how == 0 and title.startswith("The "):
        return f"{title[4:]}, The"
    if how == 1:
        return f"{title.upper()} ({year})"
    if how == 2:
        return title.replace(" ", " - ", 1) + "!"
    return f"  {title.lower()}  "


def synthetic_catalogue(
    n_items: int, planted_share: float, seed: int
) -> tuple[pd.DataFrame, list[tuple[str, str]], list[tuple[str, str]]]:
    """(items with item_id/title/year, planted duplicate pairs, planted remake pairs)."""
    rng = np.random.default_rng(seed)
    n_planted = int(n_items * planted_share)
    n_remakes = min(1000, n_items // 100)
    n_base = n_items - n_planted - n_remakes
    vocabulary = _words(30_000, rng)
    n_words = rng.integers(2, 6, size=n_base)
    picks = rng.integers(0, len(vocabulary), size=(n_base, 5))
    titles = [" ".join(vocabulary[p[:k]]) for p, k in zip(picks, n_words, strict=True)]
    with_the = rng.random(n_base) < 0.2
    titles = [f"The {t}" if w else t for t, w in zip(titles, with_the, strict=True)]
    years = rng.integers(1920, 2026, size=n_base)
    ids = [str(i) for i in range(n_items)]
    originals = rng.choice(n_base, size=n_planted + n_remakes, replace=False)
    planted, remakes = [], []
    all_titles, all_years = list(titles), years.tolist()
    for j, src in enumerate(originals.tolist()):
        new = n_base + j
        if j < n_planted:
            all_titles.append(_variant(titles[src], int(years[src]), j % 4))
            all_years.append(int(years[src]))
            planted.append((ids[src], ids[new]))
        else:
            all_titles.append(titles[src])
            all_years.append(int(years[src]) + int(rng.integers(5, 40)))
            remakes.append((ids[src], ids[new]))
    items = pd.DataFrame(
        {"item_id": ids, "title": all_titles, "year": pd.array(all_years, dtype="Int64")}
    )
    return items, planted, remakes


def run(n_items: int, planted_share: float, method: str, seed: int) -> dict[str, float]:
    items, planted, remakes = synthetic_catalogue(n_items, planted_share, seed)
    config = DuplicateConfig(method=method)  # type: ignore[arg-type]
    started, cpu_started = time.perf_counter(), time.process_time()
    canonical = find_duplicates(items, config)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    found = sum(canonical.canonical(a) == canonical.canonical(b) for a, b in planted)
    remakes_merged = sum(canonical.canonical(a) == canonical.canonical(b) for a, b in remakes)
    planted_set = {frozenset(p) for p in planted}
    key = {
        i: (normalise_title(t), y)
        for i, t, y in zip(items["item_id"], items["title"], items["year"], strict=True)
    }
    coincidences = false_merges = 0
    for group in canonical.groups:
        for other in group.aliases:
            if frozenset((group.canonical_id, other)) in planted_set:
                continue
            if key[group.canonical_id] == key[other]:
                coincidences += 1
            else:
                false_merges += 1
    result = {
        "items": float(n_items),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # < seconds when other processes share cores
        "planted_pairs": float(len(planted)),
        "planted_recall": round(found / max(1, len(planted)), 4),
        "groups": float(len(canonical)),
        "unplanted_identical_title_year": float(coincidences),
        "false_merges": float(false_merges),
        "remakes_merged": float(remakes_merged),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--planted", type=float, default=0.02, help="Share of planted copies.")
    parser.add_argument("--method", choices=("minhash", "simhash"), default="minhash")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average {load}")
    for name, value in run(args.items, args.planted, args.method, args.seed).items():
        shown = f"{value:.4f}" if name.endswith("recall") else f"{value:g}"
        print(f"{name:32s} {shown}")


if __name__ == "__main__":
    main()
