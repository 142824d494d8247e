"""Packing a text into chunks of at most ``chunk_tokens``, cut at paragraph, then line, then sentence and word
boundaries (never inside a word unless one word alone is over the limit).

Sizes come from a counter: a tiktoken encoding, a Hugging Face tokenizer (anything with ``encode``) or any
``Callable[[str], int]``; with none, the encoding of ``model`` in the model table.

How: the document is cut into units (paragraphs, or markdown blocks), counted once each and packed
greedily; a unit over the limit is cut into lines, then sentences, and only a single sentence over the limit
goes to ``semantic-text-splitter``'s ``TextSplitter`` for word cuts. For o200k_base and cl100k_base the packed
counts are exact (see ``tokens.CUT``), so most chunks are never encoded twice; for other counters each
chunk is counted once more to check it. ``MarkdownSplitter`` is not used: it cuts words at apostrophes
("don'" + "t"); :mod:`.markdown` supplies the block boundaries instead.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from typing import Any

import tiktoken

from ..errors import InputError
from ..tokens import ADDITIVE_ENCODINGS, count_many, count_with, encoding_for, get_encoding
from .markdown import markdown_blocks

__all__ = ["split", "TokenCounter"]

TokenCounter = Callable[[str], int]

# Unit boundaries by level; a unit starts where a match ends.
_PARAGRAPHS = re.compile(r"\n[^\S\n]*\n\s*")  # a blank line and the whitespace around it
_LINES = re.compile(r"\n\s*")
_SENTENCES = re.compile(r"[.!?\u2026][\"'\u2019\u201d\u00bb)\]]*\s+")
_LEVELS = (_PARAGRAPHS, _LINES, _SENTENCES)
_WORD = re.compile(r"\S+")
_NON_SPACE = re.compile(r"\S")

# ---------------------------------------------------------------------------------------------------------
# Sizes


class _Sizer:
    """Measures text for one call: count one, count many, and build the fallback splitter."""

    def __init__(self, count: TokenCounter, count_many: Callable[[list[str]], list[int]], *,
                 additive: bool = False, hf_tokenizer: Any = None) -> None:
        self.count = count
        self.count_many = count_many
        self.additive = additive  # counts add up across tokens.CUT boundaries
        self.hf_tokenizer = hf_tokenizer

    def splitter(self, capacity: int):
        from semantic_text_splitter import TextSplitter

        if self.hf_tokenizer is not None:
            return TextSplitter.from_huggingface_tokenizer(self.hf_tokenizer, capacity)
        return TextSplitter.from_callback(self.count, capacity)


def _sizer(counter: Any, model: str | None) -> _Sizer:
    if counter is None:
        counter = encoding_for(model) if model else get_encoding("o200k_base")
    if isinstance(counter, tiktoken.Encoding):
        enc = counter
        return _Sizer(lambda s: count_with(enc, s), lambda texts: count_many(enc, texts),
                      additive=enc.name in ADDITIVE_ENCODINGS)
    hf = getattr(counter, "backend_tokenizer", counter)  # a transformers fast tokenizer wraps a `tokenizers` one
    if type(hf).__module__.split(".")[0] == "tokenizers" and hasattr(hf, "encode_batch"):
        if hf.truncation is not None or hf.padding is not None:
            hf = type(hf).from_str(hf.to_str())  # a copy that neither cuts nor pads, leaving the caller's alone
            hf.no_truncation()
            hf.no_padding()
        tok = hf

        def many(texts: list[str]) -> list[int]:
            return [len(e) for e in tok.encode_batch(texts, add_special_tokens=False)]

        return _Sizer(lambda s: len(tok.encode(s, add_special_tokens=False)), many, hf_tokenizer=tok)
    if callable(getattr(counter, "encode", None)):
        encode = counter.encode
        return _Sizer(lambda s: len(encode(s)), lambda texts: [len(encode(t)) for t in texts])
    if callable(counter):
        fn = counter
        return _Sizer(lambda s: int(fn(s)), lambda texts: [int(fn(t)) for t in texts])
    raise TypeError(f"counter must be a tokenizer or a callable, not {type(counter).__name__}")


# ---------------------------------------------------------------------------------------------------------
# split


def split(text: str, chunk_tokens: int, *, counter: Any = None, model: str | None = None,
          markdown: bool = False, overlap: int = 0) -> list[str]:
    """``text`` in chunks of at most ``chunk_tokens`` tokens, cut at the largest boundary that fits.

    Boundaries, largest first: blank lines (markdown: block boundaries, so a code block stays whole when it
    fits), line breaks, sentences, words (as Unicode defines them: a hyphenated word may be cut at its
    hyphen). Only a single word over the limit is cut inside. Chunks have no leading or trailing whitespace;
    with ``overlap=0`` they hold every word of the text, in order, once. With ``overlap=n`` each chunk after
    the first starts with the whole words, at most ``n`` tokens, that ended the chunk before it.
    """
    if chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be at least 1, not {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise InputError(f"overlap must be at least 0 and below chunk_tokens ({chunk_tokens}), not {overlap}")
    packer = _Packer(text, chunk_tokens - overlap, _sizer(counter, model), markdown)
    spans = packer.spans()
    if overlap:
        spans = packer.overlapped(spans, overlap, chunk_tokens)
    return [text[a:b] for a, b in spans]


class _Packer:
    """Greedy packing of boundary-delimited units into chunks; see the module docstring."""

    def __init__(self, text: str, chunk_tokens: int, sizer: _Sizer, markdown: bool) -> None:
        self.text = text
        self.max = chunk_tokens
        self.sizer = sizer
        self.markdown = markdown
        self._splitter = None

    def spans(self, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """Chunks of text[start:end] as (start, end) offsets, without surrounding whitespace."""
        end = len(self.text) if end is None else end
        return self._pack(start, end, level=0)

    def _units(self, start: int, end: int, level: int) -> list[int]:
        """Unit starts: each unit runs to the next start and begins with a non-space character."""
        text = self.text
        content = _NON_SPACE.search(text, start, end)
        if content is None:
            return []
        first = content.start()
        if level == 0 and self.markdown:
            starts, pos = [], start
            for block in markdown_blocks(text[start:end]):
                if block.kind != "blank":
                    starts.append(pos + len(block.text) - len(block.text.lstrip()))
                pos += len(block.text)
            return starts
        return [first] + [m.end() for m in _LEVELS[level].finditer(text, first, end) if m.end() < end]

    def _pack(self, start: int, end: int, level: int) -> list[tuple[int, int]]:
        text, limit = self.text, self.max
        starts = self._units(start, end, level)
        if not starts:
            return []
        if len(starts) == 1 and level > 0:  # known to be too big, and nothing to cut at this level
            return self._oversize(starts[0], end, level)
        n = len(starts)
        bounds = starts + [end]
        counts = self.sizer.count_many([text[bounds[k]:bounds[k + 1]] for k in range(n)])
        prefix = [0]
        for c in counts:
            prefix.append(prefix[-1] + c)
        # unsafe[k]: boundaries before units 1..k where counts may not add up
        unsafe = [0, 0]
        for k in range(1, n):
            s = starts[k]
            unsafe.append(unsafe[-1] + (not (text[s - 1] == "\n" and text[s] != "/")))
        tail: dict[int, int] = {}

        def trimmed_end(k: int) -> int:
            return bounds[k] + len(text[bounds[k]:bounds[k + 1]].rstrip())

        def size(i: int, j: int) -> int:
            """Exact tokens of units i..j-1 joined, without trailing whitespace."""
            if self.sizer.additive and unsafe[j - 1] == unsafe[i]:
                last = j - 1
                if last not in tail:
                    tail[last] = self.sizer.count(text[bounds[last]:trimmed_end(last)])
                return prefix[last] - prefix[i] + tail[last]
            return self.sizer.count(text[bounds[i]:trimmed_end(j - 1)])

        out: list[tuple[int, int]] = []
        i = 0
        while i < n:
            # the most units whose untrimmed counts fit
            j = max(i, bisect.bisect_right(prefix, prefix[i] + limit, i, n + 1) - 1)
            if j < n and j > i and self.sizer.additive and size(i, j + 1) <= limit:
                j += 1  # the next unit fits once its trailing whitespace is dropped
            j = max(j, i + 1)
            while j > i + 1 and size(i, j) > limit:
                j -= 1
            if j == i + 1 and size(i, j) > limit:
                out.extend(self._oversize(bounds[i], trimmed_end(i), level))
            else:
                out.append((bounds[i], trimmed_end(j - 1)))
            i = j
        return out

    def _oversize(self, start: int, end: int, level: int) -> list[tuple[int, int]]:
        if level + 1 < len(_LEVELS):
            return self._pack(start, end, level + 1)
        if self._splitter is None:
            self._splitter = self.sizer.splitter(self.max)
        return [(start + off, start + off + len(chunk))
                for off, chunk in self._splitter.chunk_indices(self.text[start:end]) if chunk]

    def overlapped(self, spans: list[tuple[int, int]], overlap: int, limit: int) -> list[tuple[int, int]]:
        """Each chunk after the first extended back over the last words of the one before."""
        text, count = self.text, self.sizer.count
        out = spans[:1]
        for (prev_start, prev_end), (start, end) in zip(spans, spans[1:], strict=False):
            words = [m.start() for m in _WORD.finditer(text, prev_start, prev_end)]
            lo, hi = 0, len(words)  # the earliest word whose tail fits in `overlap` tokens
            while lo < hi:
                mid = (lo + hi) // 2
                if count(text[words[mid]:prev_end]) <= overlap:
                    hi = mid
                else:
                    lo = mid + 1
            while lo < len(words) and count(text[words[lo]:end]) > limit:
                lo += 1
            out.append((words[lo], end) if lo < len(words) else (start, end))
        return out

