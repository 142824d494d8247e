"""An eval run: every candidate over every item (per sample), then the judge, then the scores.

:class:`Evaluation` builds one batch job per candidate and sample, runs them one after another within the
suite's budget (what one job spends is taken from what the next may), runs the judge's jobs over the items
every candidate answered, scores, and returns the report (a dict, saved as JSON in the state folder). The
library never prints: progress goes to a callback, and the report says what happened.

Exit codes (``report["exit_code"]``): 0 every item generated and scored; 1 some items failed or a judge
output could not be parsed; 2 the server refused the key or the model; 3 the budget stopped the run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..batch.report import EXIT_BUDGET, EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from ..errors import ConfigError
from ..redact import redact_url
from ..textio import write_atomic
from .checks import CheckSettings, language_code
from .jobs import (
    JobSpec,
    model_fingerprint,
    plan_job_file,
    read_outputs,
    run_job,
    run_summary,
    template_source,
    write_job,
)
from .judge_run import JudgeStage
from .score import CandidateOutputs, Item, Scoring, score
from .suite import Candidate, Suite
from .text import detect_language, script_language

__all__ = ["Evaluation", "REPORT_FORMAT", "save_report", "clean"]

REPORT_FORMAT = 1


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def item_language(record_language: str | None, reference: str) -> str | None:
    """An item's language: given in the data, or read from the reference (script, then py3langid for
    non-ASCII text; plain ASCII is taken as English, which picks rouge-score's own tokenizer)."""
    if record_language:
        return language_code(record_language) or record_language
    script = script_language(reference)
    if script is not None:
        return script
    if reference.isascii():
        return "en"
    return detect_language(reference)[0]


class Evaluation:
    """One run of a suite. ``report = await Evaluation(suite).run()``; ``Evaluation(suite).plan()`` for
    the dry run."""

    def __init__(self, suite: Suite, *, samples: int | None = None, use_cache: bool = True,
                 progress: Callable[[str, Any], None] | None = None) -> None:
        self.suite = suite
        self.samples = samples or suite.spec.samples
        self.use_cache = use_cache
        self.progress = progress
        self.warnings: list[str] = list(suite.warnings)
        self.samples_of = {c.name: self._samples_for(c) for c in suite.candidates}
        if self.samples > 1 and max(self.samples_of.values()) == 1:
            raise ConfigError(f"--samples {self.samples}: every candidate samples at temperature 0, so every "
                              "sample would be the same; set a candidate's temperature above 0")
        self.jobs = [(c, s, self._job(c, s)) for c in suite.candidates for s in range(self.samples_of[c.name])]
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self.cost_known = True
        self.budget_stopped = False

    # -- jobs -------------------------------------------------------------------------------------------
    def _job(self, c: Candidate, sample: int) -> JobSpec:
        s = self.suite
        model = {"backend": c.backend, "model": c.model, "base_url": c.base_url, **c.params,
                 "seed": s.spec.seed + sample}
        return JobSpec(name=f"eval/{s.name}/{c.name}", folder=s.state_dir / _slug(c.name) / f"s{sample}",
                       task=c.task, template=c.template, records=[{"id": r.id, **r.fields} for r in s.records],
                       vars=c.vars, model=model, limits=c.limits.model_dump(), templates_dir=s.templates_dir)

    def _budget_left(self) -> dict[str, Any]:
        b = self.suite.spec.budget
        return {"max_cost_usd": None if b.max_cost_usd is None else max(0.0, b.max_cost_usd - self.spent_usd),
                "max_total_tokens": None if b.max_total_tokens is None
                else max(0, b.max_total_tokens - self.spent_tokens)}

    def _samples_for(self, c: Candidate) -> int:
        """Samples for one candidate: one when it is greedy (temperature 0: every sample would be the same)."""
        if self.samples < 2:
            return 1
        temperature = c.params.get("temperature")
        if temperature is None:
            from ..tasks import find_task
            from ..templates import TemplateLibrary

            declared = find_task(c.task) if c.template is None else None
            name = c.template or (declared.template if declared is not None else None)
            if name is not None:
                temperature = TemplateLibrary(self.suite.templates_dir).get(name).defaults.get("temperature")
        if not temperature:
            self.warnings.append(f"candidate {c.name!r} samples at temperature 0, so one sample of it is used "
                                 f"instead of {self.samples}")
            return 1
        return self.samples

    # -- dry run ----------------------------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """What a run would do: per job and in total, items to do, requests, tokens and the worst-case
        cost, plus an estimate for the judge. Sends nothing."""
        rows, total, unknown = [], 0.0, False
        for c, sample, spec in self.jobs:
            spec.budget = self._budget_left()
            plan = plan_job_file(write_job(spec))
            rows.append({"candidate": c.name, "sample": sample, "backend": plan.backend, "model": plan.model,
                         "items": plan.total, "done": plan.done, "todo": plan.todo, "requests": plan.requests,
                         "prompt_tokens": plan.prompt_tokens, "max_output_tokens": plan.max_output_tokens,
                         "max_cost_usd": plan.max_cost_usd, "problems": plan.problems})
            if plan.max_cost_usd is None:
                unknown = True
            else:
                total += plan.max_cost_usd
        judge = JudgeStage(self.suite, self).estimate() if self.suite.judge is not None else None
        if judge is not None:
            if judge["max_cost_usd"] is None:
                unknown = True
            else:
                total += judge["max_cost_usd"]
        return {"suite": self.suite.name, "samples": self.samples, "jobs": rows, "judge": judge,
                "warnings": self.warnings,
                "requests": sum(r["requests"] for r in rows) + (judge["requests"] if judge else 0),
                "max_cost_usd": None if unknown else round(total, 6), "budget": self.suite.spec.budget.model_dump()}

    # -- the run ----------------------------------------------------------------------------------------
    async def run_spec(self, spec: JobSpec, label: str):
        """Run one job within what is left of the budget; returns its RunReport, or None when the budget
        is already spent (or stopped an earlier job: nothing more is started)."""
        left = self._budget_left()
        if self.budget_stopped or left["max_cost_usd"] == 0 or left["max_total_tokens"] == 0:
            return None
        spec.budget = left
        callback = None if self.progress is None else (lambda p: self.progress(label, p))
        report = await run_job(write_job(spec), use_cache=self.use_cache, progress=callback)
        self.spent_tokens += report.tokens
        self.budget_stopped = report.exit_code == EXIT_BUDGET
        if report.cost_usd is None:
            self.cost_known = False
        else:
            self.spent_usd += report.cost_usd
        return report

    async def run(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        runs, codes = [], []
        for c, sample, spec in self.jobs:
            count = self.samples_of[c.name]
            label = c.name if count == 1 else f"{c.name} sample {sample + 1}/{count}"
            report = await self.run_spec(spec, label)
            codes.append(EXIT_BUDGET if report is None else report.exit_code)
            runs.append(run_summary(label, report))
        outputs = {(c.name, sample): read_outputs(spec) for c, sample, spec in self.jobs}
        complete = [r for r in self.suite.records
                    if all(r.id in outputs[c.name, s] for c in self.suite.candidates
                           for s in range(self.samples_of[c.name]))]
        missing = len(self.suite.records) - len(complete)
        if missing:
            self.warnings.append(f"{missing} of {len(self.suite.records)} items are not answered by every "
                                 "candidate yet and are left out of the scores (run again to finish them)")
        judge = None
        if self.suite.judge is not None and complete and EXIT_BUDGET not in codes and EXIT_CONFIG not in codes:
            judge = JudgeStage(self.suite, self)
            judge_codes = await judge.run(complete, {c.name: [outputs[c.name, 0][r.id] for r in complete]
                                                     for c in self.suite.candidates})
            codes += judge_codes
            runs += judge.runs
        report = self._report(complete, outputs, judge, started)
        report["runs"] = runs
        report["exit_code"] = _exit_code(codes, missing, judge)
        report["spent"] = {"cost_usd": round(self.spent_usd, 8) if self.cost_known else None,
                           "tokens": self.spent_tokens}
        report["report_path"] = str(save_report(report, self.suite.state_dir / "reports"))
        return report

    def _report(self, complete, outputs, judge, started) -> dict[str, Any]:
        s = self.suite
        items = [Item(id=r.id, input=r.input_text(s.input_field), references=r.references,
                      language=item_language(r.language, r.reference)) for r in complete]
        candidates = []
        for c in s.candidates:
            spec = next(spec for cc, sample, spec in self.jobs if cc is c and sample == 0)
            name, digest = template_source(spec.path)
            count = self.samples_of[c.name]
            served = sorted({o.model for s_ in range(count) for o in outputs[c.name, s_].values() if o.model})
            info = {"backend": c.backend, "model": c.model, "base_url": redact_url(c.base_url), "task": c.task,
                    "template": name, "template_sha256": digest, "params": c.params, "vars": c.vars,
                    "model_snapshot": {"served": served, "fingerprint": model_fingerprint(c.model)}}
            rows = [[outputs[c.name, sample][r.id] for r in complete] for sample in range(count)]
            grades = judge.grades.get(c.name) if judge is not None else None
            checks = CheckSettings.build(
                length=s.spec.checks.length or c.vars.get("length"), tolerance=s.spec.checks.length_tolerance,
                language=s.spec.checks.language or (c.vars.get("to") if c.task == "translate" else None),
                schema=s.json_schema)
            candidates.append(CandidateOutputs(c.name, info, rows, checks,
                                               judge_grades=None if grades is None else grades[0],
                                               judge_reasons=None if grades is None else grades[1]))
        scored = score(Scoring(items, candidates, s.metrics, s.baseline, s.spec.checks.labels)) if items else \
            {"signatures": {}, "candidates": [], "comparisons": [], "best": {}, "items": []}
        return {
            "aigc_eval": REPORT_FORMAT,
            "suite": {"name": s.name, "path": str(s.path), "description": s.spec.description,
                      "data": str(s.data_path), "data_sha256": s.data_sha256, "items": len(s.records),
                      "scored_items": len(items), "samples": self.samples, "seed": s.spec.seed,
                      "baseline": s.baseline, "metrics": s.metrics, "labels": s.spec.checks.labels},
            "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **scored,
            "judge": judge.summary() if judge is not None else None,
            "warnings": self.warnings,
        }


def _exit_code(codes: list[int], missing: int, judge) -> int:
    if EXIT_CONFIG in codes:
        return EXIT_CONFIG
    if EXIT_BUDGET in codes:
        return EXIT_BUDGET
    if missing or any(codes) or (judge is not None and judge.errors):
        return EXIT_FAILED
    return EXIT_OK


def save_report(report: dict[str, Any], folder: Path) -> Path:
    """Write the report atomically as ``<folder>/<time>.json`` and ``latest.json``; return the first."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = folder / f"{stamp}.json"
    text = json.dumps(clean(report), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(path, text, make_dirs=True)
    write_atomic(folder / "latest.json", text)
    return path


def clean(value: Any) -> Any:
    """The report as plain JSON: numpy numbers as Python ones, NaN and infinity as null."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
