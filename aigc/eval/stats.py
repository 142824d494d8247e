"""Uncertainty: bootstrap confidence intervals, paired tests and a multiple-comparison correction.

Every interval and paired test resamples *items* and recomputes the statistic on each resample, so a
corpus-level metric (BLEU, chrF, macro-F1) is recomputed from summed statistics, never averaged from
per-item scores. The resamples are drawn exactly as sacrebleu draws them (numpy ``default_rng(12345)``,
``choice(n, (B, n))``), so aigc's interval for BLEU or chrF is sacrebleu's own; the draws are kept as a
count matrix and applied with one matrix product, which takes 10,000 items × 1,000 resamples in well under
a second and little memory.

- interval: the 2.5th and 97.5th percentile of the resampled statistic (the order statistics sacrebleu
  uses: index ``B // 40`` and ``B - B // 40 - 1``);
- paired bootstrap (Koehn 2004, as in sacrebleu and Moses): both systems on the same resamples; the p-value
  of "no difference" counts resamples whose centred absolute difference exceeds the observed one;
- exact McNemar (accuracy, exact match) and the sign test (judge wins/losses): two-sided binomial tests
  on the discordant pairs;
- Holm's step-down correction when several candidates are tested against the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Resampler", "interval", "paired_p", "mcnemar_p", "sign_test_p", "holm", "set_holm", "percentile",
           "SEED", "RESAMPLES"]

SEED = 12345  # sacrebleu's default seed
RESAMPLES = 1000


@dataclass(frozen=True)
class Resampler:
    """``resamples`` bootstrap resamples of ``n`` items, as counts: row r takes item i ``counts[r, i]`` times."""

    n: int
    resamples: int
    seed: int
    counts: np.ndarray

    @classmethod
    def draw(cls, n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Resampler:
        rng = np.random.default_rng(seed)
        if n == 0:
            return cls(0, resamples, seed, np.zeros((resamples, 0)))
        idx = rng.choice(n, size=(resamples, n), replace=True)
        counts = np.empty((resamples, n))
        for row, drawn in zip(counts, idx, strict=True):
            row[:] = np.bincount(drawn, minlength=n)
        return cls(n, resamples, seed, counts)

    def sums(self, stats: np.ndarray) -> np.ndarray:
        """Per resample, the column sums of ``stats`` (items × k): shape (resamples, k)."""
        return self.counts @ np.asarray(stats, dtype=np.float64)

    def means(self, values: np.ndarray) -> np.ndarray:
        """Per resample, the mean of ``values`` (one per item)."""
        return (self.counts @ np.asarray(values, dtype=np.float64)) / max(self.n, 1)

    def statistic(self, stats: np.ndarray, score: Callable[[np.ndarray], float]) -> np.ndarray:
        """Per resample, ``score(summed stats)``: a corpus-level statistic recomputed on each resample."""
        return np.array([score(row) for row in self.sums(stats)])


def interval(resampled: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of a resampled statistic."""
    if len(resampled) == 0:
        return (math.nan, math.nan)
    ordered = np.sort(np.asarray(resampled, dtype=np.float64))
    lo = len(ordered) // 40
    return float(ordered[lo]), float(ordered[len(ordered) - lo - 1])


def paired_p(resampled_a: np.ndarray, resampled_b: np.ndarray, observed_diff: float) -> float:
    """Paired bootstrap p-value that A and B differ by chance (sacrebleu's ``paired-bs``). An observed
    difference of zero gives 1.0 (sacrebleu's formula would give 1/(B+1) for two identical systems)."""
    if observed_diff == 0:
        return 1.0
    diffs = np.abs(np.asarray(resampled_b, dtype=np.float64) - np.asarray(resampled_a, dtype=np.float64))
    centred = diffs - diffs.mean()
    beyond = int(np.sum(centred > abs(observed_diff)))
    return (beyond + 1) / (len(diffs) + 1)


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k or fewer successes in n fair coin flips (k ≤ n/2 side doubled)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_p(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[float, int, int]:
    """Exact McNemar test on paired right/wrong outcomes: (p, only A right, only B right)."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return _binomial_two_sided(min(only_a, only_b), only_a + only_b), only_a, only_b


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided sign test: are wins and losses (ties left out) as likely as a coin's?"""
    return _binomial_two_sided(min(wins, losses), wins + losses)


def set_holm(rows: list[dict[str, Any]]) -> None:
    """Each row's ``p_holm``: its ``p_value`` adjusted with Holm's method over the rows (one row: as is)."""
    ps = [r["p_value"] for r in rows]
    for row, p in zip(rows, holm(ps) if len(rows) > 1 else ps, strict=True):
        row["p_holm"] = p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def percentile(values: Sequence[float], q: float) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None
