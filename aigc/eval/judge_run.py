"""Running the judge: its batch jobs (one per candidate, or per pair and order), and reading its verdicts.

The judge sees each item's input, the candidate's first sample, and the reference when ``reference = true``.
Its answers go through the batch engine (cache, journal, budget), so a rerun asks it nothing twice.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .jobs import JobSpec, read_outputs, run_summary
from .judge import (
    JudgeError,
    PairOutcome,
    combine,
    parse_grade,
    parse_verdict,
    pointwise_length_bias,
    same_family_warnings,
)
from .stats import set_holm
from .suite import Record, Suite
from .text import word_count

__all__ = ["JudgeStage"]

_INSTRUCTIONS = {
    "summarize": "a summary of the input{length}",
    "translate": "a translation of the input into {to}",
    "answer": "an answer to the question, using the context when one is given",
    "news": "a news article from the facts given",
}


def instruction(task: str, variables: dict[str, Any], description: str) -> str:
    """What the candidates were asked to do, in words, for the judge."""
    if task in _INSTRUCTIONS:
        length = f" in {variables['length']}" if variables.get("length") else ""
        return _INSTRUCTIONS[task].format(length=length, to=variables.get("to", "the target language"))
    return description or "a good response to the input"


def _shown(text: str) -> str:
    """An output as the judge sees it: an empty one is said to be empty (and judged as such)."""
    return text if text.strip() else "(nothing: the assistant's output was empty)"


class JudgeStage:
    def __init__(self, suite: Suite, evaluation) -> None:
        assert suite.judge is not None
        self.suite = suite
        self.spec = suite.judge
        self.evaluation = evaluation
        self.runs: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.grades: dict[str, tuple[list[float], list[str]]] = {}
        self.pairs: list[PairOutcome] = []
        self.lengths: dict[str, list[int]] = {}
        judge_model = self.spec.model or ""
        self.warnings = same_family_warnings(judge_model, {c.name: c.model or "" for c in suite.candidates})
        base = suite.candidate(suite.baseline)
        self.instruction = instruction(base.task, base.vars, suite.spec.description)

    @property
    def template(self) -> str:
        return self.spec.template or f"judge_{self.spec.mode}"

    def _pairs(self) -> list[tuple[str, str]]:
        names = [c.name for c in self.suite.candidates]
        if self.spec.pairs == "all":
            return list(itertools.combinations(names, 2))
        return [(self.suite.baseline, n) for n in names if n != self.suite.baseline]

    def _job(self, folder: str, records: list[dict[str, Any]]) -> JobSpec:
        j = self.spec
        model = {"backend": j.backend, "model": j.model, "base_url": j.base_url, "temperature": j.temperature,
                 "max_output_tokens": j.max_output_tokens}
        limits = (j.limits or self.suite.spec.limits).model_dump()
        return JobSpec(name=f"eval/{self.suite.name}/judge", folder=self.suite.state_dir / "judge" / folder,
                       task="generate", template=self.template, records=records, model=model, limits=limits,
                       templates_dir=self.suite.templates_dir)

    def _base(self, record: Record) -> dict[str, Any]:
        base = {"id": record.id, "input": record.input_text(self.suite.input_field), "rubric": self.spec.rubric,
                "instruction": self.instruction}
        if self.spec.reference:
            base["reference"] = record.reference
        return base

    def jobs(self, records: list[Record], outputs: dict[str, list[Any]]) -> list[tuple[str, JobSpec]]:
        """(label, job) for every judge job over these records and the candidates' outputs."""
        found = []
        if self.spec.mode == "pointwise":
            for c in self.suite.candidates:
                rows = [{**self._base(r), "output": _shown(outputs[c.name][i].text)} for i, r in enumerate(records)]
                found.append((f"judge {c.name}", self._job(c.name, rows)))
            return found
        for a, b in self._pairs():
            for order, (first, second) in (("ab", (a, b)), ("ba", (b, a))):
                rows = [{**self._base(r), "output_a": _shown(outputs[first][i].text),
                         "output_b": _shown(outputs[second][i].text)} for i, r in enumerate(records)]
                found.append((f"judge {a} vs {b} ({order})", self._job(f"{a}--{b}/{order}", rows)))
        return found

    async def run(self, records: list[Record], outputs: dict[str, list[Any]]) -> list[int]:
        codes = []
        jobs = self.jobs(records, outputs)
        for label, spec in jobs:
            report = await self.evaluation.run_spec(spec, label)
            self.runs.append(run_summary(label, report))
            codes.append(3 if report is None else report.exit_code)
        self.lengths = {name: [word_count(o.text) for o in outs] for name, outs in outputs.items()}
        answers = {label: read_outputs(spec) for label, spec in jobs}
        if self.spec.mode == "pointwise":
            for c in self.suite.candidates:
                got = answers[f"judge {c.name}"]
                grades, reasons = [], []
                for r in records:
                    text = got.get(r.id)
                    grade, reason = self._parse(parse_grade, text, r.id, c.name)
                    grades.append(np.nan if grade is None else float(grade))
                    reasons.append(reason)
                self.grades[c.name] = (grades, reasons)
        else:
            for a, b in self._pairs():
                pair = PairOutcome(a, b)
                ab, ba = answers[f"judge {a} vs {b} (ab)"], answers[f"judge {a} vs {b} (ba)"]
                for i, r in enumerate(records):
                    first = self._parse(parse_verdict, ab.get(r.id), r.id, f"{a} vs {b} (A={a})")[0]
                    second = self._parse(parse_verdict, ba.get(r.id), r.id, f"{a} vs {b} (A={b})")[0]
                    combine(pair, r.id, first, second, self.lengths[a][i], self.lengths[b][i])
                self.pairs.append(pair)
        return codes

    def _parse(self, parser, output, item: str, who: str) -> tuple[Any, str]:
        if output is None:
            return None, ""  # not judged (a failed judge request, reported by its job)
        try:
            return parser(output.text)
        except JudgeError as e:
            self.errors.append({"item": item, "judged": who, "error": str(e)})
            return None, ""

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.spec.mode, "backend": self.spec.backend, "model": self.spec.model,
                               "template": self.template, "reference_guided": self.spec.reference,
                               "rubric": self.spec.rubric, "errors": self.errors, "warnings": self.warnings}
        if self.spec.mode == "pointwise":
            grades, lengths = [], []
            for name, (g, _) in self.grades.items():
                grades += g
                lengths += self.lengths.get(name, [0] * len(g))
            out["length_correlation"] = pointwise_length_bias(grades, lengths)
            return out
        rows = [p.to_dict() for p in self.pairs]
        set_holm(rows)
        out["pairs"] = rows
        out["per_item"] = {f"{p.a} vs {p.b}": p.per_item for p in self.pairs}
        return out

    def estimate(self) -> dict[str, Any]:
        """The judge's worst case for a dry run: each output slot at its candidate's output cap."""
        from ..client import Client

        j = self.spec
        client = Client(backend=j.backend, model=j.model, base_url=j.base_url, ledger=False,
                        templates_dir=self.suite.templates_dir)
        try:
            caps = {c.name: c.params.get("max_output_tokens") or 1024 for c in self.suite.candidates}
            if j.mode == "pointwise":
                slots = [(c.name,) for c in self.suite.candidates]
            else:
                slots = [pair for pair in self._pairs() for _ in range(2)]
            prompt = 0
            for r in self.suite.records:
                variables = {**self._base(r), "output": ".", "output_a": ".", "output_b": "."}
                variables.pop("id")
                request = client.build_request(self.template, variables, {})
                base_tokens = client.backend.count_tokens(request.messages, request.model)
                prompt += sum(base_tokens + sum(caps[name] for name in slot) for slot in slots)
            requests = len(self.suite.records) * len(slots)
            output = requests * j.max_output_tokens
            cost = client.engine.price(client.model, prompt, output)
            return {"backend": client.backend.name, "model": client.model, "requests": requests,
                    "prompt_tokens": prompt, "max_output_tokens": output,
                    "max_cost_usd": None if cost is None else round(cost, 6)}
        finally:
            client.close()
