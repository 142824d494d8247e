"""Scoring: from every candidate's outputs to the report's numbers, with their uncertainty.

Input is I/O-free (:class:`Scoring`: the items, their references, each candidate's outputs per sample), so
a live run and ``aigc eval compare`` (which re-scores two saved reports) score the same way. Only items that
every candidate answered in every sample are scored, so all comparisons are paired.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checks import CheckSettings, check_columns
from .jobs import Output
from .metrics import METRICS, Column, References
from .parallel import PARALLEL_MIN, Workers
from .stats import Resampler, interval, mcnemar_p, paired_p, percentile, set_holm

__all__ = ["Item", "CandidateOutputs", "Scoring", "score"]

ALPHA = 0.05


@dataclass
class Item:
    id: str
    input: str  # shown in the report
    references: list[str]
    language: str | None


@dataclass
class CandidateOutputs:
    name: str
    info: dict[str, Any]  # backend, model, template, template_sha256, params, model_snapshot...
    outputs: list[list[Output]]  # [sample][item], aligned with Scoring.items
    checks: CheckSettings = field(default_factory=CheckSettings)
    judge_grades: list[float] | None = None  # pointwise grades per item (NaN: none or unparseable)
    judge_reasons: list[str] | None = None


@dataclass
class Scoring:
    items: list[Item]
    candidates: list[CandidateOutputs]
    metrics: list[str]
    baseline: str
    labels: list[str] | None = None


def _summary(column: Column, resampler: Resampler) -> tuple[dict[str, Any], np.ndarray]:
    """The column's value, 95% interval and spread; and its resampled values (for paired tests)."""
    value = column.value()
    means = column.item_means()
    if np.isnan(means).any():  # some items unknown (e.g. no finish reason, a judge error): their own resample
        known = ~np.isnan(means)
        resampled = Resampler.draw(int(known.sum()), resampler.resamples, resampler.seed).means(means[known]) \
            if known.any() else np.array([])
    elif column.corpus is not None:
        resampled = resampler.statistic(column.stats, column.corpus)
    else:
        resampled = resampler.means(means)
    lo, hi = interval(resampled)
    out = {"title": column.title, "value": None if np.isnan(value) else value, "ci95": [lo, hi],
           "n": int((~np.isnan(means)).sum()), "scale": column.scale,
           "higher_is_better": column.higher_is_better, "corpus_level": column.corpus is not None}
    spread = column.item_std()
    if spread is not None:
        out["item_std"] = spread
    return out, resampled


def _usage(outputs: list[list[Output]]) -> dict[str, Any]:
    flat = [o for row in outputs for o in row]
    costs = [o.cost_usd for o in flat]
    known = [c for c in costs if c is not None]
    latencies = [o.latency_s for o in flat if o.latency_s is not None and not o.cached]
    n_items = len(outputs[0]) if outputs else 0
    total = sum(known) if len(known) == len(costs) else None
    return {
        "outputs": len(flat), "cached": sum(1 for o in flat if o.cached),
        "cost_usd": total, "cost_known_for": len(known),
        "cost_per_item_usd": total / n_items if total is not None and n_items else None,
        "prompt_tokens": sum(o.prompt_tokens or 0 for o in flat),
        "completion_tokens": sum(o.completion_tokens or 0 for o in flat),
        "tokens_known_for": sum(1 for o in flat if o.prompt_tokens is not None),
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
        "latency_known_for": len(latencies),
        "models": sorted({o.model for o in flat if o.model}),
    }


def score(s: Scoring, *, min_parallel: int = PARALLEL_MIN) -> dict[str, Any]:
    """Scores, intervals, paired tests against the baseline, usage, and per-item details. Metrics of more
    than ``min_parallel`` texts are computed in worker processes."""
    refs = References([i.references for i in s.items], [i.language for i in s.items], s.labels)
    scorers = {name: METRICS[name].make(refs) for name in s.metrics}
    resampler = Resampler.draw(len(s.items))
    texts_of = [[[o.text for o in row] for row in cand.outputs] for cand in s.candidates]
    with Workers(min_parallel) as workers:
        metric_columns = [scorer.columns_all(texts_of, workers) for scorer in scorers.values()]
    candidates, columns_of, resampled_of = [], {}, {}
    for index, cand in enumerate(s.candidates):
        texts = texts_of[index]
        cols: list[Column] = []
        for per_candidate in metric_columns:
            cols += per_candidate[index]
        quality = [c.name for c in cols]
        if cand.judge_grades is not None:
            cols.append(Column("judge", "judge (1-5)", np.array([cand.judge_grades], dtype=float), scale=1.0))
            quality.append("judge")
        finish = [[o.finish_reason for o in row] for row in cand.outputs]
        cols += check_columns(texts, finish, cand.checks)
        summaries = {}
        for col in cols:
            summaries[col.name], resampled_of[cand.name, col.name] = _summary(col, resampler)
        columns_of[cand.name] = {c.name: c for c in cols}
        checks = dataclasses.asdict(cand.checks)
        candidates.append({"name": cand.name, **cand.info, "checks": checks, "samples": len(cand.outputs),
                           "quality": quality, "scores": summaries, "usage": _usage(cand.outputs)})
    comparisons = _compare(s, candidates, columns_of, resampled_of)
    return {
        "signatures": {name: scorer.signature() for name, scorer in scorers.items()},
        "candidates": candidates,
        "comparisons": comparisons,
        "best": _best(candidates),
        "items": _items(s, columns_of),
    }


def _compare(s: Scoring, candidates: list[dict], columns_of: dict, resampled_of: dict) -> list[dict[str, Any]]:
    """Each candidate against the baseline on each quality column; Holm-corrected across candidates."""
    base = s.baseline
    found: list[dict[str, Any]] = []
    quality = next(c["quality"] for c in candidates if c["name"] == base)
    for cand in candidates:
        if cand["name"] == base:
            continue
        for name in quality:
            a, b = columns_of[base].get(name), columns_of[cand["name"]].get(name)
            if a is None or b is None:
                continue
            va, vb = a.value(), b.value()
            row = {"metric": name, "baseline": base, "candidate": cand["name"], "baseline_value": va,
                   "candidate_value": vb, "difference": vb - va}
            ma, mb = a.item_means(), b.item_means()
            both = ~(np.isnan(ma) | np.isnan(mb))
            if a.binary and b.binary and a.per_item.shape[0] == 1 and b.per_item.shape[0] == 1:
                row["test"] = "McNemar (exact)"
                row["p_value"], row["only_baseline_right"], row["only_candidate_right"] = mcnemar_p(
                    ma[both] > 0.5, mb[both] > 0.5)
            elif both.all():
                row["test"] = "paired bootstrap"
                row["p_value"] = paired_p(resampled_of[base, name], resampled_of[cand["name"], name], vb - va)
            else:
                rs = Resampler.draw(int(both.sum()))
                row["test"] = "paired bootstrap"
                row["p_value"] = paired_p(rs.means(ma[both]), rs.means(mb[both]),
                                          float(mb[both].mean() - ma[both].mean()))
            found.append(row)
    for metric in {r["metric"] for r in found}:
        rows = [r for r in found if r["metric"] == metric]
        set_holm(rows)
        for row in rows:
            row["significant"] = row["p_holm"] < ALPHA
    return found


def _best(candidates: list[dict]) -> dict[str, str]:
    """The best candidate per column (quality, checks, cost, latency); ties go to the first listed."""
    best: dict[str, str] = {}
    names = {n for c in candidates for n in c["scores"]}
    for name in names:
        rated = [(c["scores"][name]["value"], c["name"], c["scores"][name]["higher_is_better"])
                 for c in candidates if name in c["scores"] and c["scores"][name]["value"] is not None]
        if len(rated) > 1 and len({r[0] for r in rated}) > 1:  # no mark when all are equal
            higher = rated[0][2]
            best[name] = (max if higher else min)(rated, key=lambda r: r[0])[1]
    for key in ("cost_usd", "latency_p50_s", "latency_p95_s"):
        rated = [(c["usage"][key], c["name"]) for c in candidates if c["usage"][key] is not None]
        if len(rated) > 1 and len({r[0] for r in rated}) > 1:
            best[key] = min(rated, key=lambda r: r[0])[1]
    return best


def _items(s: Scoring, columns_of: dict) -> list[dict[str, Any]]:
    means = {cand.name: {name: [None if np.isnan(v) else float(v) for v in col.item_means()]
                         for name, col in columns_of[cand.name].items()} for cand in s.candidates}
    rows = []
    for i, item in enumerate(s.items):
        per: dict[str, Any] = {}
        for cand in s.candidates:
            entry = {"outputs": [dict(vars(row[i])) for row in cand.outputs],
                     "scores": {name: values[i] for name, values in means[cand.name].items()}}
            if cand.judge_reasons is not None:
                entry["judge_reason"] = cand.judge_reasons[i]
            per[cand.name] = entry
        rows.append({"id": item.id, "input": item.input, "references": item.references,
                     "language": item.language, "candidates": per})
    return rows
