"""Grounding replies on configured knowledge files (``aigc serve --knowledge faq.md``).

The files are read and cut into passages once, at start-up, by the same :class:`aigc.knowledge.Knowledge` that
``aigc chat --knowledge`` uses. A request that asks for grounding (the chat page's checkbox, or
``"knowledge": true`` in the body, an aigc extension) gets the passages that best match its last user message
(BM25 over content words, within a token budget), each named by its file and number, added to its system
message with an instruction to answer from them only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..knowledge import Knowledge as Library
from ..knowledge import Passage
from ..types import Message

__all__ = ["Knowledge"]

_INSTRUCTION = ("Answer from the passages below and say which ones you used. If they do not contain the answer, "
                "say that you do not know rather than guessing.")


def _counting(counter: Callable[[str], int] | Any) -> Callable[[str], int]:
    """A function giving a text's tokens, from a tokenizer or a counting function."""
    encode = getattr(counter, "encode_ordinary", None) or getattr(counter, "encode", None)
    if encode is not None:
        return lambda text: len(encode(text))
    return counter


class Knowledge:
    """Passages from files, and the selection of the ones relevant to a question."""

    def __init__(self, files: list[Path], counter: Callable[[str], int] | Any, *, passage_tokens: int = 200,
                 budget_tokens: int = 600) -> None:
        self.files = [Path(f) for f in files]
        self.count = _counting(counter)
        self.budget_tokens = budget_tokens
        try:
            self.library = Library.load(self.files, counter, passage_tokens=passage_tokens)
        except InputError as e:
            raise ConfigError(str(e)) from None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def select(self, question: str) -> list[Passage]:
        return self.library.select(question, self.budget_tokens, self.count)

    def ground(self, messages: list[Message]) -> list[Message]:
        """``messages`` with the relevant passages added to the system message (one is added if none)."""
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        passages = self.select(question)
        if not passages:
            return messages
        block = _INSTRUCTION + "\n\n" + "\n\n".join(f"[{p.source}] {p.text}" for p in passages)
        if messages and messages[0].role == "system":
            first = Message(role="system", content=f"{messages[0].content}\n\n{block}")
            return [first, *messages[1:]]
        return [Message(role="system", content=block), *messages]
