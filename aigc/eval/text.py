"""Text helpers for scoring: which language a text is in, how to cut it into tokens, how long it is.

Language, two ways:

- :func:`script_language` reads the Unicode script: Chinese (Han), Japanese (kana), Thai and Korean
  (Hangul) are certain from their characters. This picks ROUGE's tokenizer and BLEU's ``tok zh``.
- :func:`detect_language` uses py3langid (a naive Bayes model over byte n-grams, 97 languages, shipped in
  the package, offline). Its limits: texts under ~20 characters are not judged (``None``); close
  languages are confused (Norwegian/Danish, Malay/Indonesian, Serbian/Croatian); a text mixing
  languages gets the majority's; names and numbers carry no signal. Used for the output-language check.

ROUGE's own tokenizer keeps only ``[a-z0-9]``: every Chinese character (and the ä of "für") is dropped,
so Chinese scores 0. :func:`rouge_tokenizer` picks, from the item's language, rouge-score's default
tokenizer with its Porter stemmer (English), a Unicode word tokenizer without stemming (other languages
written with spaces), or single characters (Chinese, Japanese, Thai).
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["script_language", "detect_language", "rouge_tokenizer", "TOKENIZER_NAMES", "normalize_answer",
           "answer_tokens", "word_count", "sentence_count", "parse_length", "CHAR_LANGUAGES"]

CHAR_LANGUAGES = frozenset({"zh", "ja", "th"})  # written without spaces between words
MIN_DETECT_CHARS = 20

_RANGES = {
    "ja": ((0x3040, 0x30FF),),  # hiragana, katakana (checked first: Japanese also uses Han)
    "zh": ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)),
    "th": ((0x0E00, 0x0E7F),),
    "ko": ((0xAC00, 0xD7AF), (0x1100, 0x11FF)),
}


def _script_counts(text: str) -> dict[str, int]:
    counts = dict.fromkeys(_RANGES, 0)
    for ch in text:
        code = ord(ch)
        if code < 0x0E00:
            continue
        for lang, ranges in _RANGES.items():
            if any(lo <= code <= hi for lo, hi in ranges):
                counts[lang] += 1
                break
    return counts


def script_language(text: str) -> str | None:
    """zh, ja, th or ko when the text is mostly written in that script, else None."""
    if text.isascii():
        return None
    counts = _script_counts(text)
    letters = sum(1 for ch in text if ch.isalpha())
    if not letters:
        return None
    if counts["ja"] and counts["ja"] + counts["zh"] >= letters / 2:
        return "ja"
    best = max(("zh", "th", "ko"), key=counts.__getitem__)
    return best if counts[best] >= letters / 2 else None


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str | None, float]:
    """(ISO 639-1 code, confidence 0–1), or (None, 0.0) for texts too short to judge."""
    if len(text.strip()) < MIN_DETECT_CHARS:
        return None, 0.0
    script = script_language(text)
    if script is not None:
        return script, 1.0
    lang, confidence = _identifier().classify(text)
    return lang, float(confidence)


# -- ROUGE tokenizers ----------------------------------------------------------------------------------

class _Memo(ABC):
    """Remembers the tokens of each text: references are tokenized once, not once per candidate."""

    def __init__(self) -> None:
        self._seen: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        tokens = self._seen.get(text)
        if tokens is None:
            tokens = self._seen[text] = self._tokenize(text)
        return tokens

    @abstractmethod
    def _tokenize(self, text: str) -> list[str]:
        """The text's tokens, computed (``tokenize`` remembers them)."""


class _CachedStemmer:
    def __init__(self, stemmer: Any) -> None:
        self.stem = functools.lru_cache(maxsize=1 << 16)(stemmer.stem)


class _DefaultTokens(_Memo):
    """rouge-score's own tokenizer and Porter stemmer (stems memoized: the same tokens, much faster)."""

    def __init__(self, stem: bool) -> None:
        super().__init__()
        from rouge_score import tokenize

        self._fn = tokenize.tokenize
        self._stemmer: Any = None
        if stem:
            from nltk.stem import porter

            self._stemmer = _CachedStemmer(porter.PorterStemmer())  # as rouge-score builds it

    def _tokenize(self, text: str) -> list[str]:
        return self._fn(text, self._stemmer)


_WORD = re.compile(r"\w+", re.UNICODE)


class _WordTokens(_Memo):
    """Lower-cased Unicode words (ä, é, ß and Cyrillic kept); no stemming."""

    def _tokenize(self, text: str) -> list[str]:
        return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


class _CharTokens(_Memo):
    """Each letter or digit a token (Chinese, Japanese, Thai); punctuation and spaces dropped."""

    def _tokenize(self, text: str) -> list[str]:
        return [ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum()]


# name → (tokenizer factory, whether it stems); the names go into the ROUGE signature.
TOKENIZER_NAMES = {"default": "rouge-score default (a-z0-9)", "words": "Unicode words", "chars": "characters"}


def rouge_tokenizer(name: str, *, stem: bool) -> _Memo:
    if name == "default":
        return _DefaultTokens(stem)
    return _WordTokens() if name == "words" else _CharTokens()


def rouge_tokenizer_for(language: str | None) -> str:
    """The ROUGE tokenizer for a language: default for English (or unknown), chars for zh/ja/th, else words."""
    if language is None or language == "en":
        return "default"
    return "chars" if language in CHAR_LANGUAGES else "words"


# -- answers (SQuAD's normalization) --------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_NO_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 evaluation's normalization: lower case, no punctuation, no articles
    (a, an, the), single spaces."""
    text = text.lower()
    text = text.translate(_NO_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    """Tokens for token F1: the normalized answer's words, or its characters for zh/ja/th."""
    norm = normalize_answer(text)
    if script_language(norm) in CHAR_LANGUAGES:
        return [ch for ch in norm if ch.isalnum()]
    return norm.split()


# -- length ---------------------------------------------------------------------------------------------

_SENTENCES = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|(?<=[。！？])")


def word_count(text: str) -> int:
    """Words; for Chinese, Japanese and Thai text, characters count as words."""
    if script_language(text) in CHAR_LANGUAGES:
        return sum(1 for ch in text if ch.isalnum())
    return len(text.split())


def sentence_count(text: str) -> int:
    """Sentences, split after . ! ? (and 。！？); abbreviations such as "Dr." count as ends (a rough count)."""
    return sum(1 for part in _SENTENCES.split(text.strip()) if part.strip())


_LENGTH = re.compile(r"^\s*(?:about|around|at most|up to|~)?\s*(\d+|one|two|three|four|five|six|seven|eight|"
                     r"nine|ten)\s+(word|sentence)s?\b", re.I)
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
            "nine": 9, "ten": 10}


def parse_length(text: str | None) -> tuple[int, str] | None:
    """'2 sentences' → (2, 'sentence'); 'about 50 words' → (50, 'word'); anything else → None."""
    if not text:
        return None
    match = _LENGTH.match(str(text))
    if not match:
        return None
    number = match.group(1).lower()
    return int(_NUMBERS.get(number, number)), match.group(2).lower()
