"""Choosing the chunks that best answer a question, within a token budget (BM25 over words)."""

from __future__ import annotations

import math
import re
from collections import Counter as _Bag
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .packing import _sizer

__all__ = ["select_relevant", "fill_ranked", "bm25_scores", "BM25", "terms"]

# ---------------------------------------------------------------------------------------------------------
# Relevance

# Kana, CJK ideographs and Hangul count one character per term; other scripts count runs of word characters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TERM = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def fold(term: str) -> str:
    """A light English suffix fold, so "opens", "opening" and "opened" meet "open" (no dictionary: only longer
    words lose a regular ending)."""
    if len(term) > 5 and term.endswith("ies"):
        return term[:-3] + "y"
    if len(term) > 5 and term.endswith(("ing", "ed")):
        return term[:-3] if term.endswith("ing") else term[:-2]
    if len(term) > 3 and term.endswith("s") and not term.endswith(("ss", "us", "is")):
        return term[:-1]
    return term


def terms(text: str) -> list[str]:
    """Lower-cased word terms, lightly folded (single characters for Chinese, Japanese and Korean)."""
    return [fold(t) for t in _TERM.findall(text.lower())]


def bm25_scores(chunks: Sequence[str], question: str) -> list[float]:
    """Each chunk's BM25 score (k1=1.5, b=0.75) for the terms of ``question``; 0.0 shares no term."""
    return BM25(chunks).scores(terms(question))


class BM25:
    """Chunks indexed once for BM25 (k1=1.5, b=0.75), to score many queries."""

    def __init__(self, chunks: Sequence[str]) -> None:
        self.docs = [_Bag(terms(c)) for c in chunks]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lengths) / len(self.docs) if self.docs else 0.0) or 1.0

    def scores(self, query_terms: Iterable[str]) -> list[float]:
        """Each chunk's score for terms already folded by :func:`terms`; 0.0 shares none."""
        query = set(query_terms)
        df = {t: sum(1 for d in self.docs if t in d) for t in query}
        k1, b, n = 1.5, 0.75, len(self.docs)
        scores = []
        for d, length in zip(self.docs, self.lengths, strict=True):
            score = 0.0
            for t in query:
                tf = d.get(t, 0)
                if tf:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / self.avg))
            scores.append(score)
        return scores


def select_relevant(chunks: Sequence[str], question: str, room_tokens: int, counter: Any, *,
                    separator_tokens: int = 0) -> list[int]:
    """Indices, in document order, of the chunks that best answer ``question`` within ``room_tokens``
    (each kept chunk costing ``separator_tokens`` more, for what joins it to the next).

    Chunks are ranked by BM25 (k1=1.5, b=0.75) over lower-cased word terms of the question (single
    characters for Chinese, Japanese and Korean), ties going to the earlier chunk, and taken in rank order
    while they fit; a chunk too big for what is left is skipped for smaller ones further down. Chunks that
    share no term with the question still fill leftover room, earliest first.
    """
    if not chunks:
        return []
    sizer = _sizer(counter, None)
    scores = bm25_scores(chunks, question)
    order = sorted(range(len(chunks)), key=lambda k: (-scores[k], k))
    sizes = [n + separator_tokens for n in sizer.count_many(list(chunks))]
    return sorted(fill_ranked(order, sizes.__getitem__, room_tokens))


def fill_ranked(order: Iterable[int], size: Callable[[int], int], room_tokens: int) -> list[int]:
    """Of ``order`` (best first), those whose ``size`` fits what ``room_tokens`` has left, in turn: one too
    big for what is left is skipped for smaller ones further down."""
    room, keep = room_tokens, []
    for k in order:
        if (n := size(k)) <= room:
            keep.append(k)
            room -= n
    return keep
