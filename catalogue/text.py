"""Title normalisation and character shingles, vectorised over a whole column.

A shingle is ``k`` consecutive bytes of the UTF-8 normalised text, packed into one integer
(``k`` ≤ 7, so it fits 56 bits); a text shorter than ``k`` is one shingle of itself.
``shingle_set`` gives the same shingles as a Python set, for exact Jaccard on candidates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any

import numpy as np

# Trailing articles as catalogues write them ("Ice Storm, The"; "Femme Nikita, La").
_TRAILING_ARTICLE = re.compile(
    r"^(?P<rest>.+?),\s*(?P<article>the|a|an|la|le|les|l'|il|das|der|die|el|los|las|lo)$",
    re.IGNORECASE,
)
_TRAILING_YEAR = re.compile(r"\s*\((?:\d{4})\)\s*$")
_NON_WORD = re.compile(r"[^\w]+")

MAX_SHINGLE_BYTES = 7


def normalise_title(title: str) -> str:
    """ "Ice Storm, The (1997)" → "the ice storm".

    NFKC, a trailing "(yyyy)" dropped, a trailing article moved to the front, lower case,
    every run of non-word characters one space. Other parentheses ("Seven (Se7en)") stay:
    they are part of the title.
    """
    text = unicodedata.normalize("NFKC", str(title)).strip()
    text = _TRAILING_YEAR.sub("", text)
    match = _TRAILING_ARTICLE.match(text)
    if match:
        article = match["article"]
        separator = "" if article.endswith("'") else " "
        text = f"{article}{separator}{match['rest']}"
    return _NON_WORD.sub(" ", text.lower()).strip()


@dataclass(frozen=True)
class Shingles:
    """Every text's ``k``-shingles, flattened: row r owns ``codes[offsets[r]:offsets[r+1]]``.

    ``codes``: [m] uint64, bytes j..j+k-1 of the UTF-8 text packed big-endian, in text
    order (repeats kept: MinHash ignores them). ``offsets``: [n + 1] int64. An empty text
    owns no shingle; a text shorter than ``k`` owns one (itself, zero-padded).
    """

    codes: np.ndarray
    offsets: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """[n] shingles per text."""
        return np.diff(self.offsets)


def shingles(texts: Sequence[str], k: int, max_bytes: int) -> Shingles:
    """Character ``k``-shingles of each text's first ``max_bytes`` UTF-8 bytes.

    One pass over the concatenated bytes: O(total length), no per-text Python loop beyond
    the encoding.
    """
    if not 1 <= k <= MAX_SHINGLE_BYTES:
        raise ValueError(f"shingle size must be in 1..{MAX_SHINGLE_BYTES}, got {k}")
    encoded = [t.encode("utf-8")[:max_bytes] for t in texts]
    encoded = [e.ljust(k, b"\0") if 0 < len(e) < k else e for e in encoded]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    counts = np.maximum(lengths - k + 1, 0)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # Position of shingle i in the buffer: its text's start + its rank within the text.
    position = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], counts)
    codes = np.zeros(len(position), dtype=np.uint64)
    for o in range(k):
        codes = (codes << np.uint64(8)) | buffer[position + o].astype(np.uint64)
    return Shingles(codes, offsets)


def shingle_set(text: str, k: int) -> frozenset[bytes]:
    """The same shingles as a set (for exact Jaccard on a few candidate pairs)."""
    raw = text.encode("utf-8")
    if len(raw) < k:
        return frozenset([raw]) if raw else frozenset()
    return frozenset(raw[i : i + k] for i in range(len(raw) - k + 1))


def jaccard(a: Set[Any], b: Set[Any]) -> float:
    """|a ∩ b| / |a ∪ b|; 1.0 for two empty sets."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union
