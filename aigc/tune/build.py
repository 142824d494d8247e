"""Training files from what you already have (``aigc tune data-from``).

* **Input/output pairs** (JSONL records such as ``{"text": article, "summary": reference}``): each record's
  fields fill a task or template exactly as ``aigc summarize`` or a batch job would render the prompt, and
  the output field becomes the assistant's reply. The model then learns on the very prompts it will get.
* **A finished batch job** (``JOB.toml``): every item the journal has as done becomes an example, its
  prompt rendered as the job sent it and its output as the reply: distil a hosted model into the local one.

This module is tune's one link to declared tasks and templates (rendered through the client's
``build_request``, as every call renders them) and to batch jobs (:mod:`aigc.batch`).
"""

from __future__ import annotations

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


def _chat(request: Any, reply: str) -> dict[str, Any]:
    chat = [{"role": m.role, "content": m.content} for m in request.messages]
    return {"messages": [*chat, {"role": "assistant", "content": reply}]}


def from_pairs(path: str | Path, *, task: str | None = None, template: str | None = None,
               output_field: str = "output", input_field: str | None = None,
               templates_dir: str | Path | None = None, variables: dict[str, Any] | None = None) -> BuildResult:
    """Chat examples from a JSONL file of records: the record's fields (minus ``id`` and ``output_field``)
    fill ``task`` (summarize, translate, answer, news, or any declared task) or ``template``; ``output_field``
    is the reply. ``input_field`` names the field that holds the task's input when it is called otherwise."""
    from ..backends.fake import FakeBackend
    from ..client import Client

    if (task is None) == (template is None):
        raise ConfigError("give a task (--task summarize) or a template (--template NAME), not both")
    result = BuildResult()
    source = Path(path)
    # Only the rendering is used: a fake backend, so no model is loaded and nothing is sent.
    with Client(backend=FakeBackend(), ledger=False, templates_dir=templates_dir) as client:
        declared = client.template_task(template) if template else client.task(task)
        if declared.template is None:
            raise ConfigError(f"task {declared.name!r} takes chat messages; its records are training examples "
                              "already (validate them with aigc tune validate)")
        target = declared.input or "text"
        allowed = set(declared.names) if task is not None else None  # a template takes any variables
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
                request = client.build_request(declared, declared.check(values), {})
                result.examples.append(_chat(request, record[output_field]))
            except (TypeError, InputError, TemplateError) as e:
                result.skipped.append(f"{where}: {e}")
    return result


def from_job(job_file: str | Path) -> BuildResult:
    """Chat examples from a batch job's done items: the prompt as the job rendered it, the output as reply."""
    from ..batch.inputs import scan
    from ..batch.job import load_job
    from ..batch.journal import Journal
    from ..batch.plan import close_client, key_maker, open_client, record_options

    job = load_job(job_file)
    if not job.journal_path.exists():
        raise InputError(f"{job.path}: the job has never run (no journal at {job.journal_path})")
    client = open_client(job, use_cache=False)
    result = BuildResult()
    try:
        declared = job.declared if job.declared is not None else client.template_task(job.template)
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
                options = {k: v for k, v in record_options(job, item.record).items() if k != "schema"}
                request = client.build_request(declared, declared.check(item.variables(job)), options)
            except (InputError, TemplateError) as e:
                result.skipped.append(f"{item.id}: {e}")
                continue
            result.examples.append(_chat(request, reply))
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
