"""Training files from what you already have (``aigc tune data-from``).

* **Input/output pairs** (JSONL records such as ``{"text": article, "summary": reference}``): each record's
  fields fill a task or template exactly as ``aigc summarize`` or a batch job would render the prompt, and
  the output field becomes the assistant's reply. The model then learns on the very prompts it will get.
* **A finished batch job** (``JOB.toml``): every item the journal has as done becomes an example, its
  prompt rendered as the job sent it and its output as the reply: distil a hosted model into the local one.

This module is tune's one link to tasks and templates (``aigc.client.TASK_SPECS``, :mod:`aigc.templates`)
and to batch jobs (:mod:`aigc.batch`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, TemplateError
from ..textio import decode_text, write_atomic

__all__ = ["from_pairs", "from_job", "write_examples", "BuildResult"]


@dataclass
class BuildResult:
    """Examples built, and the inputs left out with the reason."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _messages(template: Any, variables: dict[str, Any], reply: str) -> dict[str, Any]:
    rendered = template.render(**variables)
    chat = [{"role": m.role, "content": m.content} for m in rendered]
    return {"messages": [*chat, {"role": "assistant", "content": reply}]}


def from_pairs(path: str | Path, *, task: str | None = None, template: str | None = None,
               output_field: str = "output", input_field: str | None = None,
               templates_dir: str | Path | None = None, variables: dict[str, Any] | None = None) -> BuildResult:
    """Chat examples from a JSONL file of records: the record's fields (minus ``id`` and ``output_field``)
    fill ``task`` (summarize, translate, answer, news) or ``template``; ``output_field`` is the reply.
    ``input_field`` names the field that holds the task's input when it is not called as the task calls it."""
    from ..batch.job import BUILTIN_TASKS
    from ..client import TASK_SPECS
    from ..templates import TemplateLibrary

    if (task is None) == (template is None):
        raise ConfigError("give a task (--task summarize) or a template (--template NAME), not both")
    if task is not None and task not in BUILTIN_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(BUILTIN_TASKS)}")
    library = TemplateLibrary(Path(templates_dir) if templates_dir else None)
    target = BUILTIN_TASKS.get(task or "", "text")
    allowed = None if task is None else set(inspect.signature(TASK_SPECS[task]).parameters) - {"opts"}
    result = BuildResult()
    source = Path(path)
    for number, line in enumerate(decode_text(source.read_bytes(), str(source)).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source.name} line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            result.skipped.append(f"{where}: not valid JSON")
            continue
        if not isinstance(record, dict) or not isinstance(record.get(output_field), str) \
                or not record[output_field].strip():
            result.skipped.append(f"{where}: no text in {output_field!r}")
            continue
        fields = {k: v for k, v in record.items() if k not in ("id", output_field)}
        if input_field is not None:
            if input_field not in fields:
                result.skipped.append(f"{where}: no {input_field!r}")
                continue
            fields[target] = fields.pop(input_field)
        values = {**(variables or {}), **fields}
        if allowed is not None:
            values = {k: v for k, v in values.items() if k in allowed}
        try:
            spec = TASK_SPECS["generate"](template, values) if template else TASK_SPECS[task](**values)
            result.examples.append(_messages(library.get(spec[0]), spec[1], record[output_field]))
        except (TypeError, InputError, TemplateError) as e:
            result.skipped.append(f"{where}: {e}")
    return result


def from_job(job_file: str | Path) -> BuildResult:
    """Chat examples from a batch job's done items: the prompt as the job rendered it, the output as reply."""
    from ..batch.inputs import scan
    from ..batch.job import load_job
    from ..batch.journal import Journal
    from ..batch.plan import close_client, key_maker, open_client, task_spec

    job = load_job(job_file)
    if not job.journal_path.exists():
        raise InputError(f"{job.path}: the job has never run (no journal at {job.journal_path})")
    client = open_client(job, use_cache=False)
    result = BuildResult()
    try:
        items = scan(job, key_maker(job, client))
        with Journal(job.journal_path) as journal:
            rows = journal.rows(i.key for i in items)
        for item in items:
            row = rows.get(item.key)
            if row is None or row.state != "done":
                result.skipped.append(f"{item.id}: not done ({row.state if row else 'never run'})")
                continue
            try:
                reply = row.text if row.text is not None else _read_output(item.output)
                spec = task_spec(job, item.variables(job))
                request = client.build_request(spec[0], spec[1], spec[3])
            except InputError as e:
                result.skipped.append(f"{item.id}: {e}")
                continue
            chat = [{"role": m.role, "content": m.content} for m in request.messages]
            result.examples.append({"messages": [*chat, {"role": "assistant", "content": reply}]})
    finally:
        close_client(client)
    return result


def _read_output(path: Path | None) -> str:
    if path is None or not path.is_file():
        raise InputError(f"its output {path} is gone")
    return decode_text(path.read_bytes(), str(path))


def write_examples(examples: list[dict[str, Any]], path: str | Path) -> Path:
    """Write examples as a JSONL training file, whole or not at all."""
    path = Path(path)
    write_atomic(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), make_dirs=True)
    return path
