"""Constrained decoding for JSON Schema output, with llguidance when it is installed.

Each step, the grammar's matcher says which tokens may come next; the others get ``-inf`` logits, so the reply
is valid JSON for the schema by construction (only a token limit can cut it short, and then
``finish_reason`` is ``"length"``). Without llguidance, or for a schema it cannot compile,
:meth:`Constraints.for_schema` returns None and the caller falls back to validating the reply and asking again.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from typing import Any

__all__ = ["Constraints", "JsonConstraint", "available"]

log = logging.getLogger("aigc.local")


def available() -> bool:
    return importlib.util.find_spec("llguidance") is not None


class JsonConstraint:
    """One request's grammar state: ``mask`` before each token, ``advance`` after it."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def mask(self, vocab: int) -> Any:
        import numpy as np
        import torch

        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = np.zeros(vocab, dtype=bool)
        n = min(vocab, bits.size)
        allowed[:n] = bits[:n].astype(bool)
        if not allowed.any():  # nothing allowed (an error state): let the end token through rather than hang
            return None
        return torch.from_numpy(allowed)

    def advance(self, token: int) -> bool:
        """Consume ``token``; False once the grammar is complete (or broken), so generation ends."""
        ok = self.matcher.consume_token(token)
        return bool(ok) and not self.matcher.is_stopped()


class Constraints:
    """Builds :class:`JsonConstraint` objects for one tokenizer (the tokenizer is wrapped once, ~1 s)."""

    def __init__(self, tokenizer: Any, end_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.end_ids = list(end_ids)
        self._ll: Any = None
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()

    def _lltokenizer(self) -> Any:
        with self._lock:
            if self._ll is None:
                import llguidance.hf

                self._ll = llguidance.hf.from_tokenizer(self.tokenizer, eos_token=self.end_ids[0])
            return self._ll

    def for_schema(self, schema: dict[str, Any]) -> JsonConstraint | None:
        """A fresh constraint for a JSON Schema, or None when it cannot be enforced here."""
        if not available():
            return None
        import llguidance

        key = json.dumps(schema, sort_keys=True)
        try:
            grammar = self._grammars.get(key)
            if grammar is None:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(
                    schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
                self._grammars[key] = grammar
            matcher = llguidance.LLMatcher(self._lltokenizer(), grammar)
        except (ValueError, TypeError, RuntimeError) as e:
            log.warning("cannot enforce this JSON schema while decoding (%s); validating the reply instead", e)
            return None
        if matcher.is_error():
            log.warning("cannot enforce this JSON schema while decoding (%s); validating the reply instead",
                        matcher.get_error())
            return None
        return JsonConstraint(matcher)
