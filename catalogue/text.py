"""Title normalisation and character shingles, vectorised over a whole column.

A shingle is ``k`` consecutive bytes of the UTF-8 normalised text, packed into one integer
(``k`` ≤ 7, so it fits 56 bits); a text shorter than ``k`` is one shingle of itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence, Set
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


def byte_matrix(texts: Sequence[str], max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of each text, truncated to ``max_bytes``.

    Returns:
        (bytes [n, max_bytes] uint8 zero-padded, lengths [n] int64).
    """
    encoded = np.array([t.encode("utf-8")[:max_bytes] for t in texts], dtype=f"S{max_bytes}")
    matrix = encoded.view(np.uint8).reshape(len(texts), max_bytes)
    lengths = np.char.str_len(encoded).astype(np.int64)
    return matrix, lengths


def shingle_matrix(texts: Sequence[str], k: int, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Character ``k``-shingles of every text, one row per text.

    Returns:
        (codes [n, w] uint64, valid [n, w] bool) with w = max(1, max_bytes - k + 1): code
        (r, j) is bytes j..j+k-1 of text r packed big-endian; ``valid`` marks positions
        inside the text. An empty text has no valid shingle.
    """
    if not 1 <= k <= MAX_SHINGLE_BYTES:
        raise ValueError(f"shingle size must be in 1..{MAX_SHINGLE_BYTES}, got {k}")
    matrix, lengths = byte_matrix(texts, max(max_bytes, k))
    width = matrix.shape[1] - k + 1
    codes = np.zeros((len(texts), width), dtype=np.uint64)
    for offset in range(k):
        codes = (codes << np.uint64(8)) | matrix[:, offset : offset + width].astype(np.uint64)
    positions = np.arange(width)[None, :]
    # A text shorter than k keeps its first (zero-padded) window as its only shingle.
    valid = (positions + k <= lengths[:, None]) | ((positions == 0) & (lengths[:, None] > 0))
    return codes, valid


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
