"""Reading a training file and checking its format the way the hosted service does, and more.

A training file is JSONL: one example per line, ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the
OpenAI chat fine-tuning format; ``tools`` and ``parallel_tool_calls`` may sit beside ``messages``). Every
problem names its line. Errors make the hosted service refuse the file or leave nothing to learn; warnings
are worth a look (a duplicate, a trailing user turn that teaches nothing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .types import Problem

__all__ = ["Example", "read_examples", "check_file", "MIN_EXAMPLES", "MAX_FILE_BYTES", "SPECIAL_TOKENS",
           "file_sha256", "text_of"]

MIN_EXAMPLES = 10
MAX_FILE_BYTES = 512 * 1024 * 1024
ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
# Control tokens of OpenAI's tokenizers and of common chat templates: text containing them is refused (the
# service rejects it; a local tokenizer would read it as control tokens and break the example's turns).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>", "<|im_start|>",
    "<|im_end|>", "<|im_sep|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>",
    "<|end_of_text|>", "<end_of_turn>", "<start_of_turn>",
)


@dataclass
class Example:
    """One usable example: its line and its messages (plus ``tools`` etc. when present)."""

    line: int
    messages: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"messages": self.messages, **self.extra}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def check_file(path: Path, *, hosted: bool) -> list[Problem]:
    """Problems with the file itself: its name and size (the service takes ``.jsonl`` up to 512 MB)."""
    problems = []
    if path.suffix.lower() != ".jsonl":
        problems.append(Problem(kind="file-type", severity="error" if hosted else "warning",
                                message=f"the file name ends in {path.suffix or 'nothing'!r}, not .jsonl; "
                                        "rename it (the hosted service accepts only .jsonl files)"))
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        problems.append(Problem(kind="file-size", severity="error" if hosted else "warning",
                                message=f"the file is {size / 2**20:,.0f} MiB; the hosted service takes at most "
                                        "512 MiB: split it or sample it"))
    return problems


def read_examples(path: str | Path, *, extra_special: tuple[str, ...] = ()) -> tuple[list[Example], list[Problem]]:
    """The file's usable examples and every problem found, each naming its line.

    ``extra_special`` adds control-token strings of the model being trained (its tokenizer's added tokens).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    specials = tuple(dict.fromkeys(SPECIAL_TOKENS + tuple(t for t in extra_special if t)))
    examples: list[Example] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                problems.append(Problem(kind="blank-line", severity="warning", line=number,
                                        message="blank line (skipped)"))
                continue
            example, found = _parse_line(raw, number, specials)
            problems += found
            if example is None or any(p.severity == "error" for p in found):
                continue
            digest = hashlib.sha256(json.dumps(example.as_json(), sort_keys=True).encode()).hexdigest()
            if digest in seen:
                problems.append(Problem(kind="duplicate", severity="warning", line=number,
                                        message=f"repeats the example on line {seen[digest]}; it will be "
                                                "learned twice as hard"))
            else:
                seen[digest] = number
            examples.append(example)
    if len(examples) < MIN_EXAMPLES:
        problems.append(Problem(kind="too-few", severity="error",
                                message=f"{len(examples)} usable example(s); fine-tuning needs at least "
                                        f"{MIN_EXAMPLES} (50-100 good ones is a better start)"))
    return examples, problems


def _parse_line(raw: bytes, line: int, specials: tuple[str, ...]) -> tuple[Example | None, list[Problem]]:
    def err(kind: str, message: str) -> Problem:
        return Problem(kind=kind, severity="error", line=line, message=message)

    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, [err("json", f"not UTF-8 text (byte {e.start})")]
    except ValueError as e:
        return None, [err("json", f"not valid JSON ({e.msg} at column {e.colno})")]
    if not isinstance(value, dict):
        return None, [err("json", f"a JSON {type(value).__name__}, not an object with \"messages\"")]
    messages = value.get("messages")
    if not isinstance(messages, list):
        return None, [err("messages", 'no "messages" list')]
    if not messages:
        return None, [err("empty", "the example has no messages")]
    problems = [Problem(kind="keys", severity="warning", line=line,
                        message=f"unknown key {key!r} beside the messages (ignored)")
                for key in sorted(set(value) - EXAMPLE_KEYS)]
    for index, message in enumerate(messages, 1):
        problems += _check_message(message, index, line, specials)
    if any(p.severity == "error" for p in problems):
        return None, problems
    problems += _check_order(messages, line)
    extra = {k: v for k, v in value.items() if k in EXAMPLE_KEYS - {"messages"}}
    return Example(line=line, messages=messages, extra=extra), problems


def _check_message(message: Any, index: int, line: int, specials: tuple[str, ...]) -> list[Problem]:
    def err(kind: str, message_text: str) -> Problem:
        return Problem(kind=kind, severity="error", line=line, message=f"message {index}: {message_text}")

    if not isinstance(message, dict):
        return [err("messages", "not a JSON object")]
    problems = []
    role = message.get("role")
    if role not in ROLES:
        problems.append(err("role", f"role {role!r} is not one of {', '.join(ROLES)}"))
    unknown = sorted(set(message) - MESSAGE_KEYS)
    if unknown:
        problems.append(err("keys", f"unknown key {unknown[0]!r}"))
    content = message.get("content")
    if content is not None and not isinstance(content, (str, list)):
        problems.append(err("content", "content must be text"))
    elif role == "assistant" and not message.get("tool_calls") and not message.get("function_call") \
            and not text_of(content).strip():
        problems.append(err("content", "an assistant message with no content and no tool calls"))
    elif role in ("system", "user") and not text_of(content).strip():
        problems.append(err("content", f"the {role} message is empty"))
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            problems.append(err("weight", "weight is allowed only on assistant messages"))
        elif isinstance(weight, bool) or weight not in (0, 1):
            problems.append(err("weight", f"weight must be 0 or 1, not {weight!r}"))
    text = text_of(content)
    for token in specials:
        if token in text:
            problems.append(err("special-token", f"contains the control token {token!r}; remove it or write "
                                                 "it differently (e.g. with a space inside)"))
            break
    return problems


def _check_order(messages: list[dict[str, Any]], line: int) -> list[Problem]:
    problems = []
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        at = roles.index("system", 1) + 1
        problems.append(Problem(kind="order", severity="error", line=line,
                                message=f"message {at}: a system message may only come first"))
    for i, message in enumerate(messages):
        if message["role"] == "tool":
            before = messages[i - 1] if i else {}
            if before.get("role") not in ("assistant", "tool") or not any(
                    m.get("tool_calls") for m in messages[:i] if m["role"] == "assistant"):
                problems.append(Problem(kind="order", severity="error", line=line,
                                        message=f"message {i + 1}: a tool message must answer an assistant "
                                                "message's tool_calls"))
                break
    learned = [m for m in messages if m["role"] == "assistant" and m.get("weight", 1) == 1]
    if not learned:
        problems.append(Problem(kind="no-assistant", severity="error", line=line,
                                message="no assistant message to learn from (every one has weight 0, or none)"))
    elif roles[-1] != "assistant":
        problems.append(Problem(kind="order", severity="warning", line=line,
                                message="the example ends after its last assistant message; the messages "
                                        "after it teach nothing"))
    if roles[0] == "assistant" or (roles[0] == "system" and len(roles) > 1 and roles[1] == "assistant"):
        problems.append(Problem(kind="order", severity="warning", line=line,
                                message="the assistant speaks before any user message"))
    return problems
