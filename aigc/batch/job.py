"""Job files: one TOML file says what to do, to which inputs, where the outputs go, and within which limits.

Paths in a job file are relative to the file itself, so a job and its inputs can move together and cron
can start it from any working directory. Every mistake is found when the file is loaded and reported as a
:class:`~aigc.errors.ConfigError` naming the file and the key, before anything is read or sent.
"""

from __future__ import annotations

import glob as globlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ..errors import ConfigError
from ..specfile import BudgetSpec, LimitsSpec, Section, read_spec
from ..tasks import Task, find_task, task_names

__all__ = ["Job", "load_job"]


class InputSpec(Section):
    glob: str | None = Field(None, description="files to process, relative to the job file")
    jsonl: str | None = Field(None, description="a JSONL file of records with an id and fields")
    input_var: str | None = Field(None, description="template jobs: the variable a file's text fills")

    @model_validator(mode="after")
    def _one_source(self) -> InputSpec:
        if (self.glob is None) == (self.jsonl is None):
            raise ValueError("give exactly one of glob or jsonl")
        return self


class OutputSpec(Section):
    dir: str | None = Field(None, description="one file per input, same stem")
    suffix: str | None = Field(None, description="output file suffix; default: the input's")
    jsonl: str | None = Field(None, description="one JSON line per item")

    @model_validator(mode="after")
    def _one_target(self) -> OutputSpec:
        if (self.dir is None) == (self.jsonl is None):
            raise ValueError("give exactly one of dir or jsonl")
        if self.suffix is not None and self.jsonl is not None:
            raise ValueError("suffix goes with dir, not jsonl")
        if self.suffix is not None and self.suffix and not self.suffix.startswith("."):
            raise ValueError("suffix must start with a dot, e.g. '.md'")
        return self


class ModelSpec(Section):
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    deadline: float | None = Field(None, gt=0)
    max_attempts: int | None = Field(None, ge=1)
    fallback: list[str] | None = Field(None, description="backends (or backend/model) that answer when this "
                                       "one's retries run out or its quota is exhausted, in order")
    seed: int | None = Field(None, description="sampling seed, sent with each request (part of the item key)")


class SafetySpec(Section):
    redact: bool | None = Field(None, description="placeholders for e-mail, phone, card and IBAN numbers")
    region: str | None = Field(None, pattern=r"^[A-Za-z]{2}$", description="phone numbers' region, e.g. DE")
    moderate: bool | None = Field(None, description="check input and output with the moderation endpoint")
    moderation_model: str | None = None
    thresholds: dict[str, float] | None = Field(None, description="category -> score that stops an item")


class BatchApiSpec(Section):
    poll_interval_s: float = Field(30.0, gt=0)
    max_requests_per_batch: int = Field(50_000, ge=1, le=50_000)


class JobFile(Section):
    name: str | None = None
    task: str | None = None
    template: str | None = None
    templates_dir: str | None = None
    state_dir: str | None = None
    input: InputSpec
    output: OutputSpec
    vars: dict[str, Any] = Field(default_factory=dict)
    model: ModelSpec = Field(default_factory=ModelSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    safety: SafetySpec = Field(default_factory=SafetySpec)
    batch_api: BatchApiSpec = Field(default_factory=BatchApiSpec)


@dataclass
class Job:
    """A loaded, checked job with its paths resolved."""

    path: Path
    spec: JobFile
    name: str
    task: str  # a declared task's name (summarize, translate, answer, news, chat...), or generate (templates)
    declared: Task | None  # that task's declaration; None for a template job
    template: str | None  # the template of a template job
    input_var: str  # the variable an input file's text fills
    allowed_vars: frozenset[str] | None  # built-in tasks: the variables they take; None: any
    required_vars: frozenset[str]
    state_dir: Path
    templates_dir: Path | None
    input_glob: str | None = None
    input_root: Path | None = None
    input_jsonl: Path | None = None
    output_dir: Path | None = None
    output_jsonl: Path | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.db"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "run.lock"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    @property
    def records_path(self) -> Path:
        """What the job wrote where (see :mod:`aigc.batch.records`)."""
        return self.state_dir / "written.jsonl"

    @property
    def id(self) -> str:
        """A short id of this job (its state folder), carried by the temporary files its runs write."""
        return "job" + hashlib.sha256(str(self.state_dir).encode("utf-8")).hexdigest()[:12]



def _glob_root(job_dir: Path, pattern: str) -> Path:
    """The folder a glob starts from: its leading components that hold no wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if globlib.has_magic(part):
            break
        fixed.append(part)
    return (job_dir / Path(*fixed)) if fixed else job_dir


def load_job(path: str | Path) -> Job:
    """Read and check a job file; raise ConfigError with one clear line for any mistake."""
    return _resolve(*read_spec(path, JobFile, kind="job", docs="docs/batch.md"))


def _resolve(path: Path, spec: JobFile) -> Job:
    job_dir = path.parent
    where = str(path)
    declared: Task | None = None
    if spec.template is not None:
        if spec.task not in (None, "generate"):
            raise ConfigError(f"{where}: give task or template, not both")
        task, template = "generate", spec.template
        input_var = spec.input.input_var or "text"
        allowed, required = None, frozenset()
    else:
        template = None
        tasks = ", ".join(t for t in task_names())
        if not spec.task:
            raise ConfigError(f"{where}: set task = one of {tasks}, or template = NAME")
        if spec.task == "generate":
            raise ConfigError(f"{where}: task 'generate' needs template = NAME")
        declared = find_task(spec.task)
        if declared is None or declared.input is None:
            raise ConfigError(f"{where}: unknown task {spec.task!r}; choose one of {tasks}, "
                              "or set template = NAME for your own template")
        if spec.input.input_var is not None:
            raise ConfigError(f"{where}: [input] input_var is for template jobs only")
        if declared.template is None and spec.input.glob is not None:
            raise ConfigError(f"{where}: task {declared.name!r} takes [input] jsonl: records with {declared.input!r}"
                              " (an OpenAI Batch API request file is accepted as it is)")
        task, input_var = declared.name, declared.input
        allowed, required = frozenset(declared.names), declared.required
        unknown = sorted(set(spec.vars) - allowed)
        if unknown:
            raise ConfigError(f"{where}: [vars] {unknown[0]}: not a {task} variable; it takes "
                              f"{', '.join(sorted(allowed - {input_var}))}")
        if input_var in spec.vars:
            raise ConfigError(f"{where}: [vars] {input_var}: the input fills this variable")
    name = spec.name or path.stem
    state_dir = (job_dir / spec.state_dir) if spec.state_dir else job_dir / ".aigc" / path.stem
    templates_dir = (job_dir / spec.templates_dir) if spec.templates_dir else None
    if templates_dir is not None and not templates_dir.is_dir():
        raise ConfigError(f"{where}: templates_dir {templates_dir} does not exist")
    job = Job(path=path, spec=spec, name=name, task=task, declared=declared, template=template, input_var=input_var,
              allowed_vars=allowed, required_vars=required, state_dir=state_dir.resolve(),
              templates_dir=templates_dir, variables=dict(spec.vars))
    if spec.input.glob is not None:
        job.input_glob = spec.input.glob
        job.input_root = _glob_root(job_dir, spec.input.glob).resolve()
        if not job.input_root.is_dir():
            raise ConfigError(f"{where}: [input] glob: folder {job.input_root} does not exist")
        missing = sorted(required - set(spec.vars) - {input_var})
        if missing:
            raise ConfigError(f"{where}: [vars] {missing[0]}: {task} needs it")
    else:
        job.input_jsonl = (job_dir / spec.input.jsonl).resolve()
        if not job.input_jsonl.is_file():
            raise ConfigError(f"{where}: [input] jsonl: {job.input_jsonl} does not exist")
    if spec.output.dir is not None:
        job.output_dir = (job_dir / spec.output.dir).resolve()
        if job.input_jsonl is not None:
            raise ConfigError(f"{where}: [output] dir: records from a JSONL file go to [output] jsonl")
        if job.output_dir == job.input_root and spec.output.suffix is None:
            raise ConfigError(f"{where}: [output] dir is the input folder; outputs would replace the inputs "
                              "(set another dir, or a suffix)")
    else:
        job.output_jsonl = (job_dir / spec.output.jsonl).resolve()
        if job.output_jsonl.is_dir():
            raise ConfigError(f"{where}: [output] jsonl: {job.output_jsonl} is a folder")
    return job
