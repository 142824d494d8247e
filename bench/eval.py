"""Scoring speed: aigc eval's scoring of 10,000 items beside the raw library calls, in the same run.

    .venv/bin/python bench/eval.py                  # 10,000 items, 1,000 bootstrap resamples
    .venv/bin/python bench/eval.py --items 2000 --json

Three kinds of suite, each scored for one candidate:

- translation: BLEU and chrF with 95% intervals. Raw: sacrebleu ``BLEU().corpus_score(hyps, [refs],
  n_bootstrap=1000)`` and the same for ``CHRF()``.
- summaries: ROUGE-1/2/L F (Porter stemmer) with 95% intervals. Raw: rouge-score's ``RougeScorer.score`` per
  item and its ``BootstrapAggregator`` (1,000 resamples).
- answers: exact match and token F1 (SQuAD normalization). Raw: the SQuAD v1.1 script's functions, per item.

aigc's figure is the whole of ``aigc.eval.score.score``: the same scores and intervals, plus per-item scores,
the reference-free checks (empty, cut at the limit) and the report's per-item rows. Every contender is timed
over the same generated sentences (20–30 words, English); each figure is the best of --repeat runs, and the
check that aigc's score equals the library's runs in the same process.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import random
import re
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aigc.eval.jobs import Output  # noqa: E402
from aigc.eval.score import CandidateOutputs, Item, Scoring, score  # noqa: E402

_TEXT = """the council voted on monday to repair harbour bridge instead of replacing it repairs will cost million
euros and start in may one lane stay open cars during work which is expected last fourteen months cyclists use
temporary ferry library open sundays from march mayor announced change follows survey residents asked weekend hours
rain flooded parts old town overnight firefighters pumped water out more than thirty cellars riverside road closed
"""
WORDS = _TEXT.split()


def sentences(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(20, 30))]
        hyp = [w if rng.random() < 0.6 else rng.choice(WORDS) for w in ref]
        refs.append(" ".join(ref).capitalize() + ".")
        hyps.append(" ".join(hyp).capitalize() + ".")
    return refs, hyps


def aigc_score(refs: list[str], hyps: list[str], metrics: list[str]) -> dict:
    items = [Item(str(i), "", [r], "en") for i, r in enumerate(refs)]
    outputs = [[Output(h, finish_reason="stop") for h in hyps]]
    return score(Scoring(items, [CandidateOutputs("c", {}, outputs)], metrics, "c"))


def raw_translation(refs, hyps) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    return {"bleu": BLEU().corpus_score(hyps, [refs], n_bootstrap=1000).score,
            "chrf": CHRF().corpus_score(hyps, [refs], n_bootstrap=1000).score}


def raw_summaries(refs, hyps) -> dict:
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    aggregator = scoring.BootstrapAggregator(n_samples=1000)
    totals = collections.Counter()
    for r, h in zip(refs, hyps, strict=True):
        result = scorer.score(r, h)
        aggregator.add_scores(result)
        totals.update({k: v.fmeasure for k, v in result.items()})
    aggregator.aggregate()  # its intervals (its "mid" is a bootstrap median, so the check uses the plain mean)
    return {k: v / len(refs) for k, v in totals.items()}


def _squad_normalize(s: str) -> str:  # the SQuAD v1.1 evaluation script's normalize_answer
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _squad_f1(prediction: str, truth: str) -> float:
    p, t = _squad_normalize(prediction).split(), _squad_normalize(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def raw_answers(refs, hyps) -> dict:
    em = sum(_squad_normalize(h) == _squad_normalize(r) for r, h in zip(refs, hyps, strict=True)) / len(refs)
    f1 = sum(_squad_f1(h, r) for r, h in zip(refs, hyps, strict=True)) / len(refs)
    return {"exact_match": em, "token_f1": f1}


SUITES = {
    "translation (BLEU + chrF, 95% CIs)": (["bleu", "chrf"], raw_translation, {"bleu": "bleu", "chrf": "chrf"}),
    "summaries (ROUGE-1/2/L, 95% CIs)": (["rouge"], raw_summaries,
                                          {"rouge1": "rouge1", "rouge2": "rouge2", "rougeL": "rougeL"}),
    "answers (exact match + token F1)": (["exact_match", "token_f1"], raw_answers,
                                         {"exact_match": "exact_match", "token_f1": "token_f1"}),
}


def best_of(repeat: int, fn, *args):
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    refs, hyps = sentences(args.items, seed=7)
    rows = []
    for name, (metrics, raw, names) in SUITES.items():
        raw_s, theirs = best_of(args.repeat, raw, refs, hyps)
        ours_s, report = best_of(args.repeat, aigc_score, refs, hyps, metrics)
        scores = report["candidates"][0]["scores"]
        for ours_name, their_name in names.items():
            assert abs(scores[ours_name]["value"] - theirs[their_name]) < 1e-6, (ours_name, scores[ours_name],
                                                                                theirs[their_name])
        rows.append({"suite": name, "items": args.items, "raw_s": round(raw_s, 3), "aigc_s": round(ours_s, 3),
                     "ratio": round(ours_s / raw_s, 2)})
    if args.json:
        print(json.dumps({"python": platform.python_version(), "rows": rows}, indent=2))
        return 0
    print(f"{args.items:,} items, best of {args.repeat}; aigc = scores + 95% CIs + per-item scores + checks")
    print(f"{'suite':<38} {'raw libraries':>14} {'aigc':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['suite']:<38} {r['raw_s']:>12.2f} s {r['aigc_s']:>7.2f} s {r['ratio']:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
