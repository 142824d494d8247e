"""Checks that need no reference, each a rate over items (and samples):

- ``empty``: the output is empty or only whitespace (lower is better);
- ``truncated``: the output was cut at the token limit (``finish_reason == "length"``; lower is better);
- ``length_ok``: the output's length is within the tolerance of the requested one ("2 sentences",
  "about 50 words"; ± 50% by default);
- ``language_ok``: the output is in the expected language (py3langid, see :mod:`aigc.eval.text` for its
  limits; outputs too short to judge count as unknown, not as wrong);
- ``json_valid``: the output parses as JSON (a ```json fence is allowed) and satisfies the JSON Schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import Column
from .text import detect_language, parse_length, sentence_count, word_count

__all__ = ["CheckSettings", "check_columns", "language_code"]

_LANGUAGE_NAMES = {
    "english": "en", "german": "de", "deutsch": "de", "french": "fr", "français": "fr", "spanish": "es",
    "italian": "it", "portuguese": "pt", "dutch": "nl", "polish": "pl", "russian": "ru", "ukrainian": "uk",
    "chinese": "zh", "simplified chinese": "zh", "traditional chinese": "zh", "mandarin": "zh",
    "japanese": "ja", "korean": "ko", "arabic": "ar", "turkish": "tr", "swedish": "sv", "danish": "da",
    "norwegian": "no", "finnish": "fi", "greek": "el", "czech": "cs", "hungarian": "hu", "thai": "th",
    "vietnamese": "vi", "indonesian": "id", "hindi": "hi", "hebrew": "he", "romanian": "ro",
}


def language_code(name: str | None) -> str | None:
    """'English' → 'en', 'de' → 'de', 'pt-BR' → 'pt'; None when unknown."""
    if not name:
        return None
    text = str(name).strip().lower()
    if text in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[text]
    code = re.split(r"[-_]", text)[0]
    return code if re.fullmatch(r"[a-z]{2,3}", code) else None


@dataclass(frozen=True)
class CheckSettings:
    length: tuple[int, str] | None = None  # (number, "word" | "sentence")
    tolerance: float = 0.5
    language: str | None = None  # ISO 639-1
    schema: dict[str, Any] | None = None

    @classmethod
    def build(cls, *, length: str | None, tolerance: float, language: str | None,
              schema: dict[str, Any] | None) -> CheckSettings:
        return cls(parse_length(length), tolerance, language_code(language), schema)


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.S)


def _json_ok(text: str, validator: Any) -> float:
    match = _FENCE.match(text)
    try:
        value = json.loads(match.group(1) if match else text)
    except ValueError:
        return 0.0
    return float(validator is None or validator.is_valid(value))


def _length_ok(text: str, wanted: tuple[int, str], tolerance: float) -> float:
    number, unit = wanted
    actual = sentence_count(text) if unit == "sentence" else word_count(text)
    return float(abs(actual - number) <= max(tolerance * number, 0.5 if unit == "word" else 0))


def check_columns(texts: list[list[str]], finish: list[list[str | None]], settings: CheckSettings) -> list[Column]:
    """The checks' columns for one candidate: ``texts[sample][item]`` and their finish reasons."""
    samples, n = len(texts), len(texts[0]) if texts else 0
    shape = (samples, n)
    empty = np.array([[float(not t.strip()) for t in row] for row in texts]).reshape(shape)
    cut = np.array([[np.nan if f is None else float(f == "length") for f in row] for row in finish]).reshape(shape)
    columns = [Column("empty", "empty", empty, binary=True, higher_is_better=False),
               Column("truncated", "cut at limit", cut, binary=True, higher_is_better=False)]
    if settings.length is not None:
        ok = np.array([[_length_ok(t, settings.length, settings.tolerance) for t in row] for row in texts])
        columns.append(Column("length_ok", "length ok", ok.reshape(shape), binary=True))
    if settings.language is not None:
        def lang_ok(text: str) -> float:
            found, _ = detect_language(text)
            return np.nan if found is None else float(found == settings.language)

        ok = np.array([[lang_ok(t) for t in row] for row in texts])
        columns.append(Column("language_ok", f"in {settings.language}", ok.reshape(shape), binary=True))
    if settings.schema is not None:
        import jsonschema

        validator = jsonschema.validators.validator_for(settings.schema)(settings.schema)
        ok = np.array([[_json_ok(t, validator) for t in row] for row in texts])
        columns.append(Column("json_valid", "valid JSON", ok.reshape(shape), binary=True))
    return columns
