"""Personas: templates that set a conversation's system prompt and defaults.

A persona is the template ``persona-NAME`` (or any template NAME with a ``system`` block). Its front matter
holds generation defaults (``temperature``, ``max_output_tokens``) and, optionally:

- ``needs_knowledge = true`` — it answers only from knowledge files, so a conversation must be given some;
- ``knowledge_tokens = 700`` — how much of the window the chosen passages may take;
- ``no_answer = "..."`` — what it says, without asking the model, when no passage shares a content word with
  the question (the ``support`` persona's refusal).

Its ``system`` block receives ``system`` (the conversation's own system prompt, when set with ``--system`` or
``/system``), ``summary`` (what trimmed turns said, with ``--trim summarize``) and ``passages`` (each with
``source`` and ``text``); its ``user`` block receives ``message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, TemplateError
from ..templates import Template, TemplateLibrary
from ..types import Message

__all__ = ["Persona", "load_persona", "PERSONA_PREFIX"]

PERSONA_PREFIX = "persona-"


@dataclass(frozen=True)
class Persona:
    name: str
    template: Template
    defaults: dict[str, Any] = field(default_factory=dict)
    no_answer: str | None = None
    needs_knowledge: bool = False
    knowledge_tokens: int = 600

    def render(self, *, message: str, system: str | None = None, summary: str | None = None,
               passages: list[dict[str, str]] | None = None) -> tuple[Message | None, Message]:
        """The system message (None if it renders empty) and the user's message for one turn."""
        messages = self.template.render(message=message, system=system or "", summary=summary or "",
                                        passages=passages or [])
        system_message = next((m for m in messages if m.role == "system"), None)
        return system_message, next(m for m in messages if m.role == "user")


_PERSONA_KEYS = ("no_answer", "needs_knowledge", "knowledge_tokens")


def load_persona(library: TemplateLibrary, name: str) -> Persona:
    """The persona called ``name``: the template ``persona-NAME``, else the template ``NAME``."""
    template = None
    for candidate in (PERSONA_PREFIX + name, name):
        try:
            template = library.get(candidate)
            break
        except TemplateError:
            continue
    if template is None:
        known = sorted(t.name.removeprefix(PERSONA_PREFIX) for t in library.names()
                       if t.name.startswith(PERSONA_PREFIX))
        raise InputError(f"no persona {name!r}; the personas are {', '.join(known)} (or a template of yours)")
    meta = template.meta
    defaults = {k: v for k, v in template.defaults.items() if k not in _PERSONA_KEYS}
    return Persona(name=name, template=template, defaults=defaults, no_answer=meta.get("no_answer"),
                   needs_knowledge=bool(meta.get("needs_knowledge")),
                   knowledge_tokens=int(meta.get("knowledge_tokens", 600)))
