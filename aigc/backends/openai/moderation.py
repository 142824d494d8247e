"""The ``/v1/moderations`` endpoint: every text of a call checked in one request."""

from __future__ import annotations

from typing import Any

import openai

from ...moderation import Verdict, verdict_from


class OpenAIModeration:
    """The backend's moderation endpoint, with its SDK clients and error translation."""

    def __init__(self, backend: Any, model: str) -> None:  # an OpenAIBackend: its clients and translate()
        self.backend = backend
        self.model = model

    def check(self, texts: list[str], timeout: float | None) -> list[Verdict]:
        try:
            answer = self.backend.client.moderations.create(model=self.model, input=texts, timeout=timeout)
        except openai.OpenAIError as e:
            raise self.backend.translate(e) from None
        return [verdict_from(r) for r in answer.results]

    async def acheck(self, texts: list[str], timeout: float | None) -> list[Verdict]:
        try:
            answer = await self.backend.async_client.moderations.create(model=self.model, input=texts,
                                                                         timeout=timeout)
        except openai.OpenAIError as e:
            raise self.backend.translate(e) from None
        return [verdict_from(r) for r in answer.results]
