"""Evaluate generated content: compare models, backends, templates and fine-tunes on your own data.

    from aigc.eval import load_suite, Evaluation
    report = asyncio.run(Evaluation(load_suite("examples/eval/summaries.toml")).run())
    report["candidates"][0]["scores"]["rougeL"]      # value, 95% interval, n

The parts: :mod:`~aigc.eval.suite` (the suite file and its data), :mod:`~aigc.eval.jobs` (generations as
batch jobs), :mod:`~aigc.eval.metrics` and :mod:`~aigc.eval.sacre` (reference metrics), :mod:`~aigc.eval.checks`
(reference-free checks), :mod:`~aigc.eval.stats` (intervals and tests), :mod:`~aigc.eval.judge` and
:mod:`~aigc.eval.judge_run` (model-as-judge), :mod:`~aigc.eval.score`, :mod:`~aigc.eval.run`,
:mod:`~aigc.eval.table` and :mod:`~aigc.eval.html` (the reports), :mod:`~aigc.eval.compare`.
Needs the ``eval`` extra: ``pip install "aigc-toolkit[eval]"``. See docs/eval.md.
"""

from __future__ import annotations

from .compare import compare_reports, load_report
from .run import Evaluation, save_report
from .suite import Candidate, Suite, load_suite

__all__ = ["load_suite", "Suite", "Candidate", "Evaluation", "save_report", "load_report", "compare_reports"]
