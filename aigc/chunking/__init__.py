"""Cutting documents that are too long for one request.

- :func:`split` (:mod:`.packing`): chunks of at most ``chunk_tokens``, cut at the largest boundary that fits.
- :func:`markdown_blocks` (:mod:`.markdown`) and :func:`group_blocks` (:mod:`.groups`): cuts for translation that keep the
  document's structure.
- :func:`select_relevant` (:mod:`.relevance`): the chunks that best match a question, within a token budget.
"""

from __future__ import annotations

from .groups import group_blocks
from .markdown import Block, markdown_blocks
from .packing import TokenCounter, split
from .relevance import select_relevant

__all__ = ["split", "Block", "markdown_blocks", "group_blocks", "select_relevant", "TokenCounter"]
