"""The ``openai`` backend: the hosted OpenAI API or any OpenAI-compatible server.

- :mod:`.backend` — :class:`OpenAIBackend` (chat completions, streaming, structured output that degrades)
- :mod:`.wire` — the request body, answers and usage as the API sends them, ``x-ratelimit-*`` headers
- :mod:`.errors` — SDK exceptions mapped onto aigc's error tree, secrets scrubbed
- :mod:`.batches` — the Batch API (upload, create, poll, results)
"""

from __future__ import annotations

from .backend import OpenAIBackend
from .errors import parse_retry_after, translate_error

__all__ = ["OpenAIBackend", "parse_retry_after", "translate_error"]
