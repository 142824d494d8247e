"""Examples to token ids and labels for a local model: its chat template, loss on the assistant's tokens only.

The example is rendered with the model's training template (:mod:`.chat_templates`) and transformers returns
which tokens lie inside ``{% generation %}`` blocks: each assistant reply and its end-of-turn token, so the
model learns to stop. Every other token (system, user, tool turns, role headers, padding) gets the label
-100 and costs no loss. An assistant message with ``weight: 0`` is shown to the model but not learned.
Examples longer than ``max_length`` are cut at the end; one left with no assistant token is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .data import Example
from .types import Problem

__all__ = ["Encoded", "encode_example", "label_segments", "IGNORE"]

IGNORE = -100


@dataclass
class Encoded:
    line: int
    input_ids: list[int]
    labels: list[int]
    full_length: int  # tokens before cutting to max_length

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of ones."""
    runs, start = [], None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            runs.append((start, i))
            start = None
    return runs


def encode_example(tokenizer: Any, template: str, example: Example,
                   max_length: int) -> tuple[Encoded | None, list[Problem]]:
    """The example as ids and labels, or None and the problem that stops it."""
    def problem(kind: str, severity: str, message: str) -> Problem:
        return Problem(kind=kind, severity=severity, line=example.line, message=message)

    if any(m.get("tool_calls") or m.get("function_call") or m["role"] == "tool" for m in example.messages):
        return None, [problem("content", "error", "tool calls cannot be trained locally yet (the chat template "
                                                  "has no place for them); drop this example")]
    chat = [{"role": m["role"], "content": _text(m.get("content"))} for m in example.messages]
    try:
        out = tokenizer.apply_chat_template(chat, chat_template=template, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    except Exception as e:  # a template error names what the template could not render
        return None, [problem("template", "error", f"the chat template cannot render it: {e}")]
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    weights = [m.get("weight", 1) for m in example.messages if m["role"] == "assistant"]
    runs = _runs(mask)
    if any(w == 0 for w in weights):
        if len(runs) != len(weights):
            return None, [problem("weight", "error", "the chat template marks a different number of replies "
                                                     "than there are assistant messages, so weights cannot "
                                                     "be applied; remove the weight keys")]
        for (start, end), weight in zip(runs, weights, strict=True):
            if weight == 0:
                mask[start:end] = [0] * (end - start)
    labels = [t if bit else IGNORE for t, bit in zip(ids, mask, strict=True)]
    encoded = Encoded(example.line, ids[:max_length], labels[:max_length], len(ids))
    problems = []
    if encoded.truncated:
        if encoded.trained == 0:
            return None, [problem("truncated-away", "error",
                                  f"{len(ids):,} tokens; cut to the {max_length:,}-token limit no assistant "
                                  "token is left to learn from: shorten the prompt or raise --max-length")]
        problems.append(problem("too-long", "warning", f"{len(ids):,} tokens, over the {max_length:,}-token "
                                                       "limit: the end is cut off"))
    return encoded, problems


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def label_segments(tokenizer: Any, encoded: Encoded) -> list[tuple[str, bool]]:
    """(text, trained) runs of an encoded example, for showing which tokens are learned and which masked."""
    segments: list[tuple[str, bool]] = []
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        text = tokenizer.decode([token])
        trained = label != IGNORE
        if segments and segments[-1][1] == trained:
            segments[-1] = (segments[-1][0] + text, trained)
        else:
            segments.append((text, trained))
    return segments
