"""Conversations: ``client.conversation(persona=..., knowledge=[...])`` and ``aigc chat``.

- :mod:`.conversation` — :class:`Conversation` / :class:`AsyncConversation`: turns, trimming, grounding
- :mod:`.store` — the SQLite store in the user data dir (simonw/llm's ``conversations``/``responses`` columns)
- :mod:`.persona` — personas as templates (``support``, ``assistant``, yours)
"""

from __future__ import annotations

from .conversation import TRIMS, AsyncConversation, Conversation, ConversationBase
from .persona import Persona, load_persona
from .store import ConversationRecord, ConversationStore, Turn

__all__ = ["Conversation", "AsyncConversation", "ConversationBase", "ConversationStore", "ConversationRecord",
           "Turn", "Persona", "load_persona", "TRIMS"]
