"""Running an eval's generations through the batch engine: one batch job per candidate and sample.

Each job is a job file and a JSONL input in the suite's state folder
(``<state_dir>/<candidate>/s<sample>/job.toml``), run with :class:`aigc.batch.Runner`, so rate limits, the
budget, the response cache and the journal apply: an interrupted eval resumes where it stopped and never
pays twice for an answer it has. A sample's seed (``seed + sample``) is sent with its requests and is part
of the cache key, so samples at temperature > 0 are separate answers, never cached copies of one.

This is the only module of :mod:`aigc.eval` that knows the batch engine's job format and output lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..textio import write_atomic

__all__ = ["JobSpec", "Output", "write_job", "run_job", "plan_job_file", "read_outputs", "current_keys",
           "template_source",
           "model_fingerprint", "run_summary"]


@dataclass
class Output:
    """One generated text and what is known of how it was made (None: unknown)."""

    text: str
    model: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    cached: bool | None = None


@dataclass
class JobSpec:
    """What one batch job does: a task or template over records, with one model's settings."""

    name: str  # the ledger's job name
    folder: Path
    task: str  # summarize, translate, answer, news, or generate
    template: str | None
    records: list[dict[str, Any]]
    vars: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # backend, model, base_url, temperature, seed...
    limits: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)  # max_cost_usd, max_total_tokens
    templates_dir: Path | None = None

    @property
    def path(self) -> Path:
        return self.folder / "job.toml"

    @property
    def output(self) -> Path:
        return self.folder / "out.jsonl"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"cannot write {type(value).__name__} into a job file")


def _section(name: str, values: dict[str, Any]) -> str:
    lines = [f"[{name}]"] + [f"{json.dumps(k)} = {_toml(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text, make_dirs=True)


def write_job(spec: JobSpec) -> Path:
    """Write the job's input and job file (only when they changed); return the job file's path."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in spec.records)
    _write_if_changed(spec.folder / "input.jsonl", lines)
    head = {"name": spec.name, "state_dir": "."}
    head.update({"template": spec.template} if spec.template else {"task": spec.task})
    if spec.templates_dir is not None:
        head["templates_dir"] = str(spec.templates_dir)
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in head.items())
    body += "\n" + _section("input", {"jsonl": "input.jsonl"})
    body += "\n" + _section("output", {"jsonl": "out.jsonl"})
    if spec.vars:
        body += "\n" + _section("vars", spec.vars)
    body += "\n" + _section("model", spec.model)
    body += "\n" + _section("limits", spec.limits)
    if any(v is not None for v in spec.budget.values()):
        body += "\n" + _section("budget", spec.budget)
    _write_if_changed(spec.path, body)
    return spec.path


async def run_job(path: Path, *, use_cache: bool = True, progress: Any = None):
    """Run one job to the end (what is done is skipped); returns the batch RunReport."""
    from ..batch import Runner, load_job

    return await Runner(load_job(path), use_cache=use_cache, progress=progress).run()


def plan_job_file(path: Path):
    """The batch dry run of one job: items to do, requests, tokens, worst-case cost. Sends nothing."""
    from ..batch import load_job, plan_job

    return plan_job(load_job(path))


def current_keys(spec: JobSpec) -> dict[str, str]:
    """Each record's item key as the job stands now (its template, model, settings and input)."""
    from ..batch import load_job
    from ..batch.inputs import scan
    from ..batch.plan import close_client, key_maker, open_client

    job = load_job(spec.path)
    client = open_client(job, use_cache=False)
    try:
        return {item.id: item.key for item in scan(job, key_maker(job, client))}
    finally:
        close_client(client)


def read_outputs(spec: JobSpec) -> dict[str, Output]:
    """The job's outputs by record id, only those made for the job as it stands now: a line written for an
    earlier template, model or setting (another item key) is not this candidate's output any more."""
    found: dict[str, Output] = {}
    try:
        raw = spec.output.read_text(encoding="utf-8")
    except FileNotFoundError:
        return found
    keys = current_keys(spec)
    for line in raw.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line; the next run repairs it
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            continue
        if row.get("key") != keys.get(str(row.get("id"))):
            continue
        found[str(row.get("id"))] = Output(
            text=row["text"], model=row.get("model"), finish_reason=row.get("finish_reason"),
            prompt_tokens=row.get("prompt_tokens"), completion_tokens=row.get("completion_tokens"),
            cost_usd=row.get("cost_usd"), latency_s=row.get("latency_s"), cached=row.get("cached"))
    return found


def template_source(path: Path) -> tuple[str, str]:
    """(template name, sha256 of its source) that a written job renders its prompts with."""
    from ..batch import load_job
    from ..templates import TemplateLibrary

    job = load_job(path)
    name = job.template or (job.declared.template if job.declared is not None else None)
    if name is None:  # a task that sends its messages as they are (chat)
        return job.task, hashlib.sha256(job.task.encode("utf-8")).hexdigest()
    source = TemplateLibrary(job.templates_dir).source(name)
    return name, hashlib.sha256(source.encode("utf-8")).hexdigest()


def model_fingerprint(model: str | None) -> str | None:
    """For a model that is a local folder or file (a fine-tune), a digest of its files: their names and
    sizes, files up to 64 MiB in full, larger ones by their first and last MiB. None for a model name."""
    if not model:
        return None
    path = Path(model).expanduser()
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}\n".encode())
        with open(file, "rb") as f:
            if size <= 64 << 20:
                digest.update(f.read())
            else:
                digest.update(f.read(1 << 20))
                f.seek(-(1 << 20), 2)
                digest.update(f.read())
    return "sha256:" + digest.hexdigest()[:16]


def run_summary(label: str, report) -> dict[str, Any]:
    """A job's line in the eval report (None: not started, the budget was spent)."""
    if report is None:
        return {"job": label, "outcome": "budget", "note": "not started: the suite's budget was spent"}
    return {"job": label, "outcome": report.outcome, "exit_code": report.exit_code, "total": report.total,
            "done": report.done, "failed": report.failed, "pending": report.pending,
            "done_this_run": report.done_this_run, "cached": report.cached, "requests": report.requests,
            "cost_usd": report.cost_usd, "tokens": report.tokens, "stopped": report.stopped,
            "failures": [dataclasses.asdict(f) for f in report.failures[:20]], "report": report.report_path}
