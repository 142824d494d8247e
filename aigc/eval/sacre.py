"""BLEU and chrF through sacrebleu, with each system's statistics extracted once.

sacrebleu's public calls (``corpus_score(..., n_bootstrap=1000)``, ``PairedTest``) extract every
sentence's statistics again on each call. An eval needs the corpus score, its interval, per-item scores and
a paired test per pair of candidates, so this module calls the same sacrebleu functions those public calls
are made of — ``_extract_corpus_statistics`` (the per-sentence n-gram statistics) and
``_compute_score_from_stats`` (the score from summed statistics) — once per system, and resamples the
summed statistics itself with the draws sacrebleu makes (:mod:`aigc.eval.stats`). The scores, intervals and
paired p-values equal sacrebleu's own (tests/test_eval_metrics.py checks them against the public API), and
the signature strings are sacrebleu's. Only this module touches sacrebleu's internals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .stats import RESAMPLES, SEED

__all__ = ["SacreMetric", "bleu_tokenizer", "system_stats"]


def bleu_tokenizer(languages: set[str | None]) -> str:
    """sacrebleu's tokenizer for the target languages: ``zh`` for Chinese, ``char`` for Japanese and Thai
    (``ja-mecab`` needs MeCab), else the standard ``13a``."""
    if "zh" in languages:
        return "zh"
    if languages & {"ja", "th"}:
        return "char"
    return "13a"


class SacreMetric:
    """One sacrebleu metric bound to the references of a data set."""

    def __init__(self, name: str, references: list[list[str]], *, tokenize: str = "13a") -> None:
        from sacrebleu.metrics import BLEU, CHRF

        self.name = name
        nrefs = max((len(r) for r in references), default=1)
        # sacrebleu takes one stream per reference; None where an item has fewer references
        self._streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(nrefs)]
        if name == "bleu":
            self.metric: Any = BLEU(tokenize=tokenize)
            self.item_metric: Any = BLEU(tokenize=tokenize, effective_order=True)  # sentence BLEU
        elif name == "chrf":
            self.metric = CHRF()
            self.item_metric = self.metric
        else:
            raise ValueError(f"not a sacrebleu metric: {name}")
        # what caching the references would set, for the signature; the cache itself is built on first use
        self.metric.num_refs = nrefs if len({len(r) for r in references}) <= 1 else -1
        self.metric.n_bootstrap, self.metric.seed = RESAMPLES, str(SEED)  # shown in the signature

    def stats(self, hypotheses: list[str]) -> np.ndarray:
        """Per-sentence sufficient statistics (items × k) against the references."""
        if not self.metric._ref_cache:
            self.metric._ref_cache = self.metric._cache_references(self._streams)
        return np.asarray(self.metric._extract_corpus_statistics(hypotheses, None), dtype=np.float64)

    def score(self, summed: np.ndarray) -> float:
        """The corpus score from summed statistics (0–100)."""
        return float(self.metric._compute_score_from_stats(_ints(summed)).score)

    def item_scores(self, stats: np.ndarray) -> np.ndarray:
        """Each item's own score: sentence chrF, or sentence BLEU with effective order."""
        return np.array([self.item_metric._compute_score_from_stats(_ints(row)).score for row in stats])

    def signature(self) -> str:
        """sacrebleu's signature, e.g. ``BLEU|nrefs:1|bs:1000|seed:12345|case:mixed|eff:no|tok:13a|...``."""
        title = "BLEU" if self.name == "bleu" else f"chrF{self.metric.beta}"
        return f"{title}|{self.metric.get_signature().format()}"


def _ints(row: np.ndarray) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in row]


def system_stats(name: str, tokenize: str, references: list[list[str]], systems: list[list[str]]) -> list:
    """Each system's per-sentence statistics against ``references`` (a worker's share of the items)."""
    metric = SacreMetric(name, references, tokenize=tokenize)
    return [metric.stats(hypotheses) for hypotheses in systems]
