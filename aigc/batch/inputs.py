"""A job's items: files matched by a glob, or records of a JSONL file, each with its key.

An item's key is the SHA-256 of everything that decides its output: the task, the template's name and
source, the variables, the backend, the model and its sampling settings, and the input's content. The
journal records items by key, so a rerun skips what is done and a changed input or template makes a new
item. Inputs that cannot be used (empty, binary, not UTF-8, a broken JSONL line) become items too, marked
with the reason, so they are reported rather than silently skipped.

File contents are not kept in memory: a file is hashed when the job is scanned and read again when its
item runs (a file changed in between is left for the next run, under its new key).
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..textio import decode_text
from .job import Job

__all__ = ["Item", "KeyMaker", "scan"]


@dataclass
class Item:
    """One unit of work: an input file or record, its key and where its output goes."""

    id: str  # the file's path relative to the job file, or the record's id
    key: str
    source: Path | None = None  # the file to read (file items)
    digest: str = ""  # SHA-256 of the file's bytes when scanned
    record: dict[str, Any] | None = None  # the record's fields (record items)
    error: str | None = None  # why the input cannot be used
    output: Path | None = None  # the output file (file outputs)
    extra: dict[str, Any] = field(default_factory=dict)

    def variables(self, job: Job) -> dict[str, Any]:
        """The task's variables for this item; reads a file item's text (InputError if unusable now)."""
        if self.error is not None:
            raise InputError(self.error)
        values = dict(job.variables)
        if self.record is not None:
            fields = {k: v for k, v in self.record.items() if k != "id"}
            if job.allowed_vars is not None:
                fields = {k: v for k, v in fields.items() if k in job.allowed_vars}
            values.update(fields)
            return values
        assert self.source is not None
        data = _read(self.source, self.id)
        if hashlib.sha256(data).hexdigest() != self.digest:
            raise _Changed(f"{self.id} changed during the run; it will be done as a new item next run")
        values[job.input_var] = decode_text(data, self.id)
        return values


class _Changed(InputError):
    """A file changed between the scan and its turn; it is left pending."""


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _Changed(f"{name} was removed during the run") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read it ({e.strerror})") from None


class KeyMaker:
    """Keys for one job's items: the parts every item shares are hashed once."""

    def __init__(self, job: Job, *, template_name: str, template_source: str, backend: str, model: str,
                 temperature: float | None, max_output_tokens: int | None, seed: int | None = None) -> None:
        self.job = job
        self.common = {
            "v": 1, "task": job.task, "template": template_name,
            "template_sha256": hashlib.sha256(template_source.encode("utf-8")).hexdigest(),
            "vars": job.variables, "input_var": job.input_var, "backend": backend, "model": model,
            "temperature": temperature, "max_output_tokens": max_output_tokens,
        }
        if seed is not None:  # only when set, so the keys of existing unseeded jobs stay the same
            self.common["seed"] = seed

    def key(self, content: dict[str, Any] | str) -> str:
        blob = json.dumps({**self.common, "input": content}, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def scan(job: Job, keys: KeyMaker) -> list[Item]:
    """Every item of the job as its inputs stand now, in a stable order."""
    return _scan_files(job, keys) if job.input_glob is not None else _scan_records(job, keys)


def _excluded(job: Job) -> list[Path]:
    """Folders whose files are never inputs: the job's own state, and its outputs (else they feed back)."""
    return [p for p in (job.state_dir, job.output_dir) if p is not None]


def _scan_files(job: Job, keys: KeyMaker) -> list[Item]:
    assert job.input_glob is not None and job.input_root is not None
    pattern = str(job.dir / job.input_glob)
    skip = _excluded(job)
    items = []
    for name in sorted(globlib.glob(pattern, recursive=True)):
        path = Path(name).resolve()
        if not path.is_file() or any(path.is_relative_to(p) for p in skip):
            continue
        rel = path.relative_to(job.dir).as_posix() if path.is_relative_to(job.dir) else str(path)
        item = Item(id=rel, key="", source=path)
        try:
            data = path.read_bytes()
        except OSError as e:
            data = b""
            item.error = f"{rel}: cannot read it ({e.strerror})"
        item.digest = hashlib.sha256(data).hexdigest()
        if item.error is None:
            try:
                decode_text(data, rel)
            except InputError as e:
                item.error = str(e)
        item.key = keys.key({"file_sha256": item.digest})
        if job.output_dir is not None:
            target = job.output_dir / path.relative_to(job.input_root) if path.is_relative_to(job.input_root) \
                else job.output_dir / path.name
            suffix = job.spec.output.suffix
            item.output = target.with_suffix(suffix) if suffix is not None else target
            if item.output == path:
                item.error = f"{rel}: its output would replace it; set [output] suffix or another dir"
        items.append(item)
    return items


def _scan_records(job: Job, keys: KeyMaker) -> list[Item]:
    assert job.input_jsonl is not None
    try:
        raw = job.input_jsonl.read_bytes()
    except OSError as e:
        raise InputError(f"{job.input_jsonl}: cannot read it ({e.strerror})") from None
    items, seen = [], {}
    for number, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        record, error = None, None
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            error = f"{job.input_jsonl.name} {where} is not UTF-8 (byte {e.start})"
        except ValueError:
            error = f"{job.input_jsonl.name} {where} is not valid JSON"
        else:
            if isinstance(value, dict):
                value = _flattened(value)
            if not isinstance(value, dict):
                error = f"{job.input_jsonl.name} {where} is not a JSON object"
            elif not isinstance(value.get("id"), str | int) or isinstance(value.get("id"), bool) \
                    or str(value.get("id")).strip() == "":
                error = f"{job.input_jsonl.name} {where} has no id (a string or number)"
            else:
                record = value
        item_id = str(record["id"]) if record is not None else where
        if record is not None and item_id in seen:
            error = f"{job.input_jsonl.name} {where}: id {item_id!r} is already used on line {seen[item_id]}"
            item_id, record = where, None
        if record is not None:
            seen[item_id] = number
            error = _record_problem(job, record)
        content = record if record is not None else {"raw_sha256": hashlib.sha256(line).hexdigest()}
        items.append(Item(id=item_id, key=keys.key(content), record=record, error=error))
    return items


def _flattened(value: dict[str, Any]) -> dict[str, Any]:
    """A line of an OpenAI Batch API request file taken as a record: its ``custom_id`` is the record's id,
    its ``body`` (messages, model, temperature...) the record's fields."""
    if "id" not in value and "custom_id" in value and isinstance(value.get("body"), dict):
        return {"id": value["custom_id"], **value["body"]}
    return value


def _record_problem(job: Job, record: dict[str, Any]) -> str | None:
    present = {k for k, v in record.items() if v is not None} | set(job.variables)
    missing = sorted(job.required_vars - present)
    if missing:
        return f"record {record['id']!r} has no {missing[0]!r}"
    value = record.get(job.input_var)
    kind = job.declared.param(job.input_var).type if job.declared is not None else str
    if value is not None and not isinstance(value, kind):
        return f"record {record['id']!r}: {job.input_var!r} must be {'text' if kind is str else 'a list'}"
    if job.input_var not in present and job.template is None:
        return f"record {record['id']!r} has no {job.input_var!r}"
    return None
