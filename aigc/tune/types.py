"""What the tune functions return: typed, JSON-ready results (pydantic), and the one error they add."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from ..errors import InputError

__all__ = [
    "Problem", "ValidationReport", "TrainProgress", "LocalResult", "HostedEvent", "HostedJob", "Alias",
    "TrainingDataInvalid",
]

Severity = Literal["error", "warning"]
# The states a run does not leave.
TERMINAL = ("succeeded", "failed", "cancelled")


class Problem(BaseModel):
    """One thing wrong with a training file. ``line`` is the file's line number (None: the file as a whole)."""

    kind: str = Field(description="json, messages, role, order, keys, content, weight, special-token, "
                                  "no-assistant, empty, duplicate, too-long, truncated-away, too-few, "
                                  "file-type, file-size, retired, price, moderation, blank-line")
    severity: Severity
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.severity}: {self.message}"


class ValidationReport(BaseModel):
    """What :func:`aigc.tune.validate` found, and what training on the file would take and cost."""

    path: str
    target: Literal["local", "openai"]
    model: str
    examples: int = 0
    usable_examples: int = 0
    problems: list[Problem] = Field(default_factory=list)
    example_limit: int | None = Field(None, description="most tokens of one example; longer ones are cut")
    tokens: int = Field(0, description="tokens of one pass over the usable examples, after cutting")
    trained_tokens: int = Field(0, description="of those, the assistant tokens the loss is computed on")
    min_example_tokens: int = 0
    max_example_tokens: int = 0
    mean_example_tokens: float = 0.0
    epochs: int = 0
    epochs_default: bool = True
    training_tokens: int = Field(0, description="tokens × epochs: what a hosted job bills")
    training_price: float | None = Field(None, description="USD per 1M training tokens")
    prices_as_of: date | None = None
    estimated_cost_usd: float | None = Field(None, description="hosted: tokens × epochs × price; local: 0")
    moderated: int = 0
    notes: list[str] = Field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


class TrainingDataInvalid(InputError):
    """The training file has problems that stop training; ``report`` lists each one with its line."""

    def __init__(self, report: ValidationReport) -> None:
        errors = report.errors
        first = "; ".join(str(p) for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"{report.path}: {len(errors)} problem(s) stop training: {first}{more}; "
                         "see `aigc tune validate` for all of them")
        self.report = report


class TrainProgress(BaseModel):
    """A snapshot of a local training run, for progress bars and logs."""

    phase: Literal["loading", "evaluating", "training", "saving", "done"]
    step: int = 0
    max_steps: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    tokens_per_s: float | None = None
    note: str = ""


class LocalResult(BaseModel):
    """A finished local fine-tune: where it is and how it went (also in the folder's ``aigc-tune.json``)."""

    output: str
    base_model: str
    method: Literal["lora", "full"]
    examples_train: int
    examples_eval: int
    data_sha256: str
    steps: int
    epochs: float
    learning_rate: float
    batch_size: int
    max_length: int
    train_loss: float | None = None
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    train_tokens: int = Field(0, description="non-padding tokens the model was trained on")
    train_seconds: float = 0.0
    tokens_per_s: float | None = None
    resumed_from_step: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    saved_dtype: str = "float32"
    created: str = ""
    already_done: bool = Field(False, description="the same run had finished before; nothing was trained")
    eval_suite: dict | None = Field(None, description="the eval suite's paired result, base vs tuned")


class HostedEvent(BaseModel):
    """One event of a hosted job, as the provider reported it."""

    id: str
    created_at: int
    level: str = "info"
    message: str
    type: str = "message"


class HostedJob(BaseModel):
    """A hosted fine-tuning job as the local journal knows it (``aigc tune status``)."""

    run_id: str
    provider: str = "openai"
    model: str
    suffix: str | None = None
    data_path: str
    data_sha256: str
    state: str = Field(description="uploading, creating, validating_files, queued, running, succeeded, "
                                   "failed, cancelled")
    file_id: str | None = None
    job_id: str | None = None
    fine_tuned_model: str | None = None
    epochs: int | None = None
    estimated_tokens: int | None = None
    estimated_cost_usd: float | None = None
    trained_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    checkpoints: list[str] = Field(default_factory=list)
    created: str
    updated: str
    finished: str | None = None
    reattached: bool = Field(False, description="this call took over a job an earlier, interrupted call began")

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class Alias(BaseModel):
    """A short name for a fine-tuned model: an ``ft:...`` id or a local result folder."""

    name: str
    model: str = Field(description="the hosted model id, or the absolute path of a local model folder")
    backend: Literal["openai", "local"]
    base_model: str | None = None
    input_price: float | None = None
    output_price: float | None = None
    retires: date | None = Field(None, description="the base model's shutdown day: the alias stops working then")
    created: str = ""
