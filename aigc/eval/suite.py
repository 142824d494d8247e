"""Eval suite files: the data set, the task or template, the candidates, the metrics and the judge.

A suite is one TOML file; paths in it are relative to the file. Every mistake is found when it is loaded
and reported as a :class:`~aigc.errors.ConfigError` naming the file and the key, before anything is sent.
The data set is a JSONL file of records ``{"id": ..., <input fields>, "reference": ...}``; the reference
(and a label, a language code) are held back from the candidates. See docs/eval.md for the format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import ConfigError, InputError
from ..specfile import BudgetSpec, LimitsSpec, Section, read_spec
from ..textio import decode_text

__all__ = ["Suite", "Candidate", "JudgeSpec", "Record", "load_suite", "DEFAULT_METRICS", "INPUT_FIELDS"]

# The field a built-in task's input comes from, and the metrics it is scored with by default.
INPUT_FIELDS = {"summarize": "text", "translate": "text", "news": "facts", "answer": "question"}
DEFAULT_METRICS = {"summarize": ["rouge"], "translate": ["chrf", "bleu"], "news": ["rouge"],
                   "answer": ["exact_match", "token_f1"]}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class FieldsSpec(Section):
    input: str | None = Field(None, description="the record field holding the input (default: the task's)")
    reference: str = Field("reference", description="the reference text (or a list of them), or the label")
    language: str | None = Field(None, description="a field holding each item's language code")


class ChecksSpec(Section):
    length: str | None = Field(None, description='requested length, e.g. "2 sentences" or "50 words"')
    length_tolerance: float = Field(0.5, gt=0, le=10)
    language: str | None = Field(None, description="the language every output must be in, e.g. en")
    json_schema: str | None = Field(None, description="a JSON Schema file every output must satisfy")
    labels: list[str] | None = Field(None, description="the allowed labels (label metrics)")


class CandidateSpec(Section):
    name: str
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    task: str | None = None
    template: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    deadline: float | None = Field(None, gt=0)
    max_attempts: int | None = Field(None, ge=1)
    vars: dict[str, Any] = Field(default_factory=dict)
    limits: LimitsSpec | None = None


class JudgeSpec(Section):
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    template: str | None = None
    rubric: str = "accurate, faithful to the input, complete and clearly written"
    reference: bool = Field(False, description="reference-guided grading: show the judge the reference")
    pairs: Literal["baseline", "all"] = "baseline"
    temperature: float = Field(0.0, ge=0, le=2)
    max_output_tokens: int = Field(300, gt=0)
    limits: LimitsSpec | None = None


class SuiteFile(Section):
    name: str | None = None
    description: str = ""
    task: str | None = None
    template: str | None = None
    templates_dir: str | None = None
    state_dir: str | None = None
    data: str
    metrics: list[str] | None = None
    baseline: str | None = None
    samples: int = Field(1, ge=1, le=100)
    seed: int = 1
    fields: FieldsSpec = Field(default_factory=FieldsSpec)
    vars: dict[str, Any] = Field(default_factory=dict)
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    candidates: list[CandidateSpec] = Field(min_length=1)
    judge: JudgeSpec | None = None

    @model_validator(mode="after")
    def _names(self) -> SuiteFile:
        seen = set()
        for c in self.candidates:
            if not _NAME.match(c.name):
                raise ValueError(f"candidate name {c.name!r}: use letters, digits, '.', '_', '+' or '-'")
            if c.name.lower() in seen:
                raise ValueError(f"candidate name {c.name!r} is used twice")
            seen.add(c.name.lower())
        return self


@dataclass(frozen=True)
class Candidate:
    """One system to evaluate: a backend, a model, a task or template, and its parameters."""

    name: str
    backend: str | None
    model: str | None
    base_url: str | None
    task: str  # summarize, translate, answer, news, or generate (a template)
    template: str | None
    vars: dict[str, Any]
    params: dict[str, Any]  # temperature, max_output_tokens, timeout, deadline, max_attempts
    limits: LimitsSpec


@dataclass
class Record:
    """One item of the data set: its fields for the candidates, and what is held back from them."""

    id: str
    fields: dict[str, Any]
    references: list[str]
    language: str | None = None

    @property
    def reference(self) -> str:
        return self.references[0] if self.references else ""

    def input_text(self, input_field: str) -> str:
        """The input as a person reads it: the input field, then any other text fields under their names."""
        main = self.fields.get(input_field)
        others = {k: v for k, v in self.fields.items() if k != input_field and isinstance(v, str) and v}
        if isinstance(main, str) and not others:
            return main
        parts = [main] if isinstance(main, str) else []
        parts += [f"[{k}]\n{v}" for k, v in others.items()]
        return "\n\n".join(parts) if parts else json.dumps(self.fields, ensure_ascii=False)


@dataclass
class Suite:
    """A loaded, checked suite with its paths resolved and its data read."""

    path: Path
    spec: SuiteFile
    name: str
    candidates: list[Candidate]
    records: list[Record]
    input_field: str
    metrics: list[str]
    baseline: str
    state_dir: Path
    templates_dir: Path | None
    data_path: Path
    data_sha256: str
    json_schema: dict[str, Any] | None = None
    judge: JudgeSpec | None = None
    warnings: list[str] = field(default_factory=list)

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)



def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file and its data; raise ConfigError with one clear line for any mistake."""
    return _resolve(*read_spec(path, SuiteFile, kind="suite", docs="docs/eval.md"))


def _task_of(where: str, task: str | None, template: str | None, default: tuple[str, str | None]) -> tuple:
    if template is not None:
        return "generate", template
    if task is None:
        return default
    from ..tasks import find_task, task_names

    declared = find_task(task)  # built-in or registered, by name or alias (ask → answer)
    if declared is None or declared.input is None:
        raise ConfigError(f"{where}: unknown task {task!r}; choose one of {', '.join(task_names())}, "
                          "or set template = NAME")
    return declared.name, None


def _declared_input(task: str) -> str | None:
    from ..tasks import find_task

    declared = find_task(task)
    return declared.input if declared is not None else None


def _resolve(path: Path, spec: SuiteFile) -> Suite:
    where = str(path)
    base = path.parent
    if spec.task is None and spec.template is None and not all(c.task or c.template for c in spec.candidates):
        raise ConfigError(f"{where}: set task = one of {', '.join(INPUT_FIELDS)}, or template = NAME")
    if spec.task is not None and spec.template is not None:
        raise ConfigError(f"{where}: give task or template, not both")
    default = _task_of(where, spec.task, spec.template, ("", None))
    candidates = []
    for c in spec.candidates:
        if c.task is not None and c.template is not None:
            raise ConfigError(f"{where}: [[candidates]] {c.name}: give task or template, not both")
        task, template = _task_of(f"{where}: [[candidates]] {c.name}", c.task, c.template, default)
        params = {k: v for k, v in c.model_dump(include={"temperature", "max_output_tokens", "timeout",
                                                         "deadline", "max_attempts"}).items() if v is not None}
        candidates.append(Candidate(name=c.name, backend=c.backend, model=c.model, base_url=c.base_url,
                                    task=task, template=template, vars={**spec.vars, **c.vars}, params=params,
                                    limits=c.limits or spec.limits))
    tasks = {c.task for c in candidates}
    first = candidates[0].task
    input_field = spec.fields.input or INPUT_FIELDS.get(first) or _declared_input(first) or "text"
    metrics = spec.metrics if spec.metrics is not None else DEFAULT_METRICS.get(first, ["chrf"])
    from .metrics import METRICS  # the declared metrics

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"{where}: metrics: unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    if any(METRICS[m].labels for m in metrics) and not spec.checks.labels:
        raise ConfigError(f"{where}: [checks] labels: label metrics need the list of allowed labels")
    baseline = spec.baseline or candidates[0].name
    if baseline not in {c.name for c in candidates}:
        raise ConfigError(f"{where}: baseline {baseline!r} is not a candidate")
    state_dir = (base / spec.state_dir) if spec.state_dir else base / ".aigc" / "eval" / (spec.name or path.stem)
    templates_dir = (base / spec.templates_dir).resolve() if spec.templates_dir else None
    if templates_dir is not None and not templates_dir.is_dir():
        raise ConfigError(f"{where}: templates_dir {templates_dir} does not exist")
    data_path = (base / spec.data).resolve()
    records, digest = _read_records(where, data_path, spec.fields, input_field if len(tasks) == 1 else None)
    schema = None
    if spec.checks.json_schema:
        schema_path = base / spec.checks.json_schema
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: [checks] json_schema: cannot read {schema_path} as JSON ({e})") from None
    if spec.judge is not None and spec.judge.mode == "pairwise" and len(candidates) < 2:
        raise ConfigError(f"{where}: [judge] mode = pairwise needs at least two candidates")
    return Suite(path=path, spec=spec, name=spec.name or path.stem, candidates=candidates, records=records,
                 input_field=input_field, metrics=list(metrics), baseline=baseline,
                 state_dir=state_dir.resolve(), templates_dir=templates_dir, data_path=data_path,
                 data_sha256=digest, json_schema=schema, judge=spec.judge)


def _read_records(where: str, data_path: Path, fields: FieldsSpec,
                  input_field: str | None) -> tuple[list[Record], str]:
    try:
        raw = data_path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: data: cannot read {data_path} ({e.strerror})") from None
    records: list[Record] = []
    seen: set[str] = set()
    name = data_path.name
    try:
        text = decode_text(raw, name) if raw.strip() else ""  # empty: "has no records", below
    except InputError as e:
        raise ConfigError(f"{where}: data: {e}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise ConfigError(f"{name} line {number}: not valid JSON") from None
        if not isinstance(value, dict) or not isinstance(value.get("id"), str | int) or value["id"] == "":
            raise ConfigError(f"{name} line {number}: a record needs an id (a string or number)")
        item_id = str(value["id"])
        if item_id in seen:
            raise ConfigError(f"{name} line {number}: id {item_id!r} is used twice")
        seen.add(item_id)
        reference = value.get(fields.reference)
        refs = [reference] if isinstance(reference, str) else reference
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise ConfigError(f"{name} line {number}: {fields.reference!r} must be a text or a list of texts")
        if input_field is not None and not isinstance(value.get(input_field), str):
            raise ConfigError(f"{name} line {number}: the input field {input_field!r} is missing or not text "
                              "(name the field with [fields] input = ...)")
        held = {fields.reference, "id"} | ({fields.language} if fields.language else set())
        language = value.get(fields.language) if fields.language else None
        records.append(Record(id=item_id, fields={k: v for k, v in value.items() if k not in held},
                              references=refs, language=str(language) if language else None))
    if not records:
        raise ConfigError(f"{where}: data: {name} has no records")
    return records, hashlib.sha256(raw).hexdigest()
