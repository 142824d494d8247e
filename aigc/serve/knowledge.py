"""Grounding replies on configured knowledge files (``aigc serve --knowledge faq.md``).

The files are read and cut into passages once, at start-up. A request that asks for grounding (the chat page's
checkbox, or ``"knowledge": true`` in the body, an aigc extension) gets the passages that best match its last
user message, chosen with aigc's passage selection (BM25, within a token budget), added to its system message
with an instruction to answer from them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..chunking import select_relevant, split
from ..errors import ConfigError
from ..textio import decode_text
from ..types import Message

__all__ = ["Knowledge"]

_INSTRUCTION = ("Answer from the passages below. If they do not contain the answer, say that you do not know "
                "rather than guessing.")


class Knowledge:
    """Passages from files, and the selection of the ones relevant to a question."""

    def __init__(self, files: list[Path], counter: Callable[[str], int] | Any, *, passage_tokens: int = 200,
                 budget_tokens: int = 600) -> None:
        self.files = [Path(f) for f in files]
        self.counter = counter
        self.budget_tokens = budget_tokens
        self.passages: list[str] = []
        for path in self.files:
            try:
                text = decode_text(path.read_bytes(), str(path))
            except OSError as e:
                raise ConfigError(f"cannot read the knowledge file {path}: {e.strerror}") from None
            self.passages += split(text, passage_tokens, counter=counter, markdown=True)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def select(self, question: str) -> list[str]:
        keep = select_relevant(self.passages, question, self.budget_tokens, self.counter)
        return [self.passages[i] for i in keep]

    def ground(self, messages: list[Message]) -> list[Message]:
        """``messages`` with the relevant passages added to the system message (one is added if none)."""
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        passages = self.select(question)
        if not passages:
            return messages
        block = _INSTRUCTION + "\n\n" + "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
        if messages and messages[0].role == "system":
            first = Message(role="system", content=f"{messages[0].content}\n\n{block}")
            return [first, *messages[1:]]
        return [Message(role="system", content=block), *messages]
