"""Reference metrics, declared once each: what they need, how they are computed, which library does it.

- ``bleu``, ``chrf``: sacrebleu, corpus-level (see :mod:`aigc.eval.sacre`); ``tok zh`` for Chinese targets.
- ``rouge``: rouge-score's ROUGE-1, ROUGE-2 and ROUGE-L F-measure, the tokenizer chosen from each item's
  language (:mod:`aigc.eval.text`), recorded in an aigc ROUGE signature with the stemmer setting.
- ``exact_match``, ``token_f1``: SQuAD v1.1's answer normalization, the best over the references.
- ``accuracy``, ``macro_f1``: labels; an output counts as the label it names (exactly, or the only allowed
  label it contains as a word), else as no label (wrong).

Each metric gives :class:`Column` objects: per-item scores for each sample, and for corpus-level metrics the
per-item sufficient statistics from which the score (and each bootstrap resample) is recomputed.
"""

from __future__ import annotations

import re
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .parallel import Workers
from .text import answer_tokens, normalize_answer, rouge_tokenizer, rouge_tokenizer_for

__all__ = ["Column", "MetricDef", "METRICS", "References", "parse_label"]

METRIC_VERSION = 1  # bump when aigc changes how a metric is computed


@dataclass
class Column:
    """One reported score of one candidate: e.g. rougeL, bleu, exact_match, or a check's rate."""

    name: str
    title: str
    per_item: np.ndarray  # (samples, items); NaN where unknown
    stats: np.ndarray | None = None  # (items, k) statistics summed over samples (corpus-level metrics)
    corpus: Callable[[np.ndarray], float] | None = None
    binary: bool = False  # right/wrong per item (McNemar applies)
    higher_is_better: bool = True
    scale: float = 100.0  # multiply for display (rates and F-measures as percentages)

    def item_means(self) -> np.ndarray:
        """Each item's score averaged over samples."""
        if self.per_item.size == 0:
            return np.zeros(self.per_item.shape[1])
        if not np.isnan(self.per_item).any():
            return self.per_item.mean(axis=0)
        with warnings.catch_warnings():  # an item unknown in every sample stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.per_item, axis=0)

    def value(self) -> float:
        if self.corpus is not None and self.stats is not None:
            return self.corpus(self.stats.sum(axis=0))
        means = self.item_means()
        means = means[~np.isnan(means)]
        return float(means.mean()) if len(means) else float("nan")

    def item_std(self) -> float | None:
        """Mean over items of the standard deviation across samples (None with one sample)."""
        if self.per_item.shape[0] < 2:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanstd(self.per_item, axis=0, ddof=1)
        spread = spread[~np.isnan(spread)]
        return float(spread.mean()) if len(spread) else None


@dataclass
class References:
    """What the metrics score against: each item's references and language, and the allowed labels."""

    texts: list[list[str]]
    languages: list[str | None]
    labels: list[str] | None = None

    @property
    def n(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class MetricDef:
    name: str
    title: str
    make: Callable[[References], Any]  # → a scorer with .columns(hypotheses) and .signature()
    labels: bool = False


class _Scorer(ABC):
    """Scores every candidate's outputs; subclasses that are slow per item split items over processes."""

    @abstractmethod
    def columns(self, hypotheses: list[list[str]]) -> list[Column]:
        """One column of per-item scores for each of the scorer's metrics."""

    def columns_all(self, candidates: list[list[list[str]]], workers: Workers | None = None) -> list[list[Column]]:
        """The columns of each candidate (``candidates[c][sample][item]``)."""
        return [self.columns(hypotheses) for hypotheses in candidates]


class _Chunked(_Scorer):
    """A scorer slow per item: the items are split over processes, every candidate's samples in one pass."""

    refs: References

    def columns(self, hypotheses: list[list[str]]) -> list[Column]:
        return self.columns_all([hypotheses])[0]

    def columns_all(self, candidates: list[list[list[str]]], workers: Workers | None = None) -> list[list[Column]]:
        if workers is None:
            with Workers() as own:
                return self.columns_all(candidates, own)
        systems = [h for hypotheses in candidates for h in hypotheses]
        n = self.refs.n
        parts = workers.run_chunked(self._scoring(), n, lambda a, b: self._share(a, b, [s[a:b] for s in systems]),
                                    work=n * len(systems))
        return [self._columns(per_sample) for per_sample in _split(candidates, self._per_system(parts, len(systems)))]

    @abstractmethod
    def _scoring(self) -> Callable[..., Any]:
        """The function scoring one share of the items (run in a worker process)."""

    @abstractmethod
    def _share(self, a: int, b: int, systems: list[list[str]]) -> tuple:
        """Its arguments for items ``a`` to ``b`` (``systems`` already cut to them)."""

    @abstractmethod
    def _per_system(self, parts: list[Any], count: int) -> list[np.ndarray]:
        """The shares' results joined, one entry per system."""

    @abstractmethod
    def _columns(self, per_sample: list[np.ndarray]) -> list[Column]:
        """One candidate's columns from its samples' entries."""


def _split(candidates: list[list[list[str]]], joined: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per candidate, the entries of ``joined`` (one per candidate and sample, in order)."""
    out, k = [], 0
    for hypotheses in candidates:
        out.append(joined[k:k + len(hypotheses)])
        k += len(hypotheses)
    return out


# -- sacrebleu ----------------------------------------------------------------------------------------

class _Sacre(_Chunked):
    def __init__(self, name: str, refs: References) -> None:
        from .sacre import SacreMetric, bleu_tokenizer

        self.name, self.refs = name, refs
        self.tokenize = bleu_tokenizer(set(refs.languages))
        self.metric = SacreMetric(name, refs.texts, tokenize=self.tokenize)

    def _scoring(self) -> Callable[..., Any]:
        from .sacre import system_stats

        return system_stats

    def _share(self, a: int, b: int, systems: list[list[str]]) -> tuple:
        return self.name, self.tokenize, self.refs.texts[a:b], systems

    def _per_system(self, parts: list[Any], count: int) -> list[np.ndarray]:
        return [np.concatenate([part[k] for part in parts]) for k in range(count)]

    def _columns(self, per_sample: list[np.ndarray]) -> list[Column]:
        stats = np.sum(per_sample, axis=0)
        per_item = np.array([self.metric.item_scores(s) for s in per_sample])
        title = "BLEU" if self.name == "bleu" else "chrF"
        return [Column(self.name, title, per_item, stats=stats, corpus=self.metric.score, scale=1.0)]

    def signature(self) -> str:
        return self.metric.signature()


# -- rouge-score ----------------------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(languages: list[str | None], references: list[list[str]], systems: list[list[str]]) -> np.ndarray:
    """F-measures (ROUGE types × systems × items) for a share of the items, each item tokenized for its
    language."""
    from rouge_score import rouge_scorer

    scorers: dict[str, Any] = {}
    out = np.full((len(ROUGE_TYPES), len(systems), len(references)), np.nan)
    for i, (lang, refs) in enumerate(zip(languages, references, strict=True)):
        name = rouge_tokenizer_for(lang)
        scorer = scorers.get(name)
        if scorer is None:
            scorer = scorers[name] = rouge_scorer.RougeScorer(list(ROUGE_TYPES),
                                                              tokenizer=rouge_tokenizer(name, stem=True))
        for s, hyps in enumerate(systems):
            result = scorer.score(refs[0], hyps[i]) if len(refs) == 1 else scorer.score_multi(refs, hyps[i])
            for t, kind in enumerate(ROUGE_TYPES):
                out[t, s, i] = result[kind].fmeasure
    return out


class _Rouge(_Chunked):
    def __init__(self, refs: References) -> None:
        self.refs = refs
        self.groups: dict[str, list[int]] = {}
        for i, lang in enumerate(refs.languages):
            self.groups.setdefault(rouge_tokenizer_for(lang), []).append(i)
        self.langs = {name: sorted({refs.languages[i] or "?" for i in idx}) for name, idx in self.groups.items()}

    def _scoring(self) -> Callable[..., Any]:
        return rouge_scores

    def _share(self, a: int, b: int, systems: list[list[str]]) -> tuple:
        return self.refs.languages[a:b], self.refs.texts[a:b], systems

    def _per_system(self, parts: list[Any], count: int) -> list[np.ndarray]:
        scores = np.concatenate(parts, axis=2)  # types × systems × items
        return [scores[:, k, :] for k in range(count)]

    def _columns(self, per_sample: list[np.ndarray]) -> list[Column]:
        mine = np.stack(per_sample, axis=1)  # types × samples × items
        titles = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
        return [Column(kind, titles[kind], mine[t]) for t, kind in enumerate(ROUGE_TYPES)]

    def signature(self) -> str:
        from importlib.metadata import version

        toks = "+".join(f"{name}({','.join(self.langs[name])})" for name in sorted(self.groups))
        stem = "porter(en)" if "default" in self.groups else "no"
        return (f"ROUGE|types:{','.join(ROUGE_TYPES)}|score:f|tok:{toks}|stem:{stem}|"
                f"version:{version('rouge-score')}|aigc:{METRIC_VERSION}")


# -- answers ---------------------------------------------------------------------------------------------

def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref:
        return float(pred == ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _Answers(_Scorer):
    def __init__(self, name: str, refs: References) -> None:
        self.name, self.refs = name, refs

    def columns(self, hypotheses: list[list[str]]) -> list[Column]:
        values = np.zeros((len(hypotheses), self.refs.n))
        for s, hyps in enumerate(hypotheses):
            for i, hyp in enumerate(hyps):
                refs = self.refs.texts[i]
                if self.name == "exact_match":
                    values[s, i] = max(float(normalize_answer(hyp) == normalize_answer(r)) for r in refs)
                else:
                    values[s, i] = max(_token_f1(hyp, r) for r in refs)
        if self.name == "exact_match":
            return [Column("exact_match", "exact match", values, binary=True)]
        return [Column("token_f1", "token F1", values)]

    def signature(self) -> str:
        return f"{self.name}|norm:squad-v1.1|refs:max|aigc:{METRIC_VERSION}"


# -- labels ----------------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def parse_label(output: str, labels: list[str]) -> str | None:
    """The allowed label an output names: exactly (ignoring case and punctuation), or the only allowed
    label it contains as a word; None otherwise."""
    def norm(text: str) -> str:
        return " ".join(_NON_WORD.sub(" ", text.lower()).split())

    said = norm(output)
    by_norm = {norm(label): label for label in labels}
    if said in by_norm:
        return by_norm[said]
    found = [label for key, label in by_norm.items() if key and re.search(rf"(?<!\w){re.escape(key)}(?!\w)", said)]
    return found[0] if len(found) == 1 else None


class _Labels(_Scorer):
    def __init__(self, name: str, refs: References) -> None:
        self.name, self.refs = name, refs
        self.allowed = list(refs.labels or [])
        gold = [r[0] for r in refs.texts]
        self.classes = [label for label in self.allowed if label in set(gold)]  # averaged over these
        self.gold = gold

    def columns(self, hypotheses: list[list[str]]) -> list[Column]:
        predicted = [[parse_label(h, self.allowed) for h in hyps] for hyps in hypotheses]
        right = np.array([[float(p == g) for p, g in zip(preds, self.gold, strict=True)] for preds in predicted])
        if self.name == "accuracy":
            return [Column("accuracy", "accuracy", right, binary=True)]
        k = len(self.classes)
        stats = np.zeros((self.refs.n, 3 * k))  # per class: true positives, false positives, false negatives
        for preds in predicted:
            for i, (p, g) in enumerate(zip(preds, self.gold, strict=True)):
                for c, label in enumerate(self.classes):
                    stats[i, 3 * c] += p == label and g == label
                    stats[i, 3 * c + 1] += p == label and g != label
                    stats[i, 3 * c + 2] += p != label and g == label
        per_item = right  # an item's share in macro-F1 is not separable; show whether it was right
        return [Column("macro_f1", "macro-F1", per_item, stats=stats, corpus=_macro_f1)]

    def signature(self) -> str:
        return f"{self.name}|labels:{','.join(self.allowed)}|avg:classes-in-references|aigc:{METRIC_VERSION}"


def _macro_f1(summed: np.ndarray) -> float:
    tp, fp, fn = summed[0::3], summed[1::3], summed[2::3]
    denominator = 2 * tp + fp + fn
    with np.errstate(all="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
    return float(f1.mean()) if len(f1) else float("nan")


METRICS: dict[str, MetricDef] = {m.name: m for m in [
    MetricDef("bleu", "BLEU (sacrebleu)", lambda refs: _Sacre("bleu", refs)),
    MetricDef("chrf", "chrF (sacrebleu)", lambda refs: _Sacre("chrf", refs)),
    MetricDef("rouge", "ROUGE-1/2/L F (rouge-score)", _Rouge),
    MetricDef("exact_match", "exact match (SQuAD normalization)", lambda refs: _Answers("exact_match", refs)),
    MetricDef("token_f1", "token F1 (SQuAD normalization)", lambda refs: _Answers("token_f1", refs)),
    MetricDef("accuracy", "label accuracy", lambda refs: _Labels("accuracy", refs), labels=True),
    MetricDef("macro_f1", "label macro-F1", lambda refs: _Labels("macro_f1", refs), labels=True),
]}
