"""Cutting documents that are too long for one request.

- :func:`split`: chunks of at most ``max_tokens``, cut at paragraph, then line, then sentence and word
  boundaries (never inside a word unless one word alone is over the limit).
- :func:`markdown_blocks` and :func:`group_blocks`: cuts for translation that keep the document's structure;
  code is never offered for translation and joining the blocks gives the text back byte for byte.
- :func:`select_relevant`: the chunks that best match a question, within a token budget.

Sizes come from a counter: a tiktoken encoding, a Hugging Face tokenizer (anything with ``encode``) or any
``Callable[[str], int]``; with none, the encoding of ``model`` in the model table.

How: the document is cut into units (paragraphs, or markdown blocks), counted once each and packed
greedily; a unit over the limit is cut into lines, then sentences, and only a single sentence over the limit
goes to ``semantic-text-splitter``'s ``TextSplitter`` for word cuts. For o200k_base and cl100k_base the packed
counts are exact (see ``tokens.CUT``), so most chunks are never encoded twice; for other counters each
chunk is counted once more to check it. ``MarkdownSplitter`` is not used: it cuts words at apostrophes
("don'" + "t"); :func:`markdown_blocks` supplies the block boundaries instead.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter as _Bag
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import tiktoken

from .errors import InputError
from .tokens import ADDITIVE_ENCODINGS, count_many, count_with, encoding_for, get_encoding

__all__ = ["split", "Block", "markdown_blocks", "group_blocks", "select_relevant"]

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


def split(text: str, max_tokens: int, *, counter: Any = None, model: str | None = None,
          markdown: bool = False, overlap: int = 0) -> list[str]:
    """``text`` in chunks of at most ``max_tokens`` tokens, cut at the largest boundary that fits.

    Boundaries, largest first: blank lines (markdown: block boundaries, so a code block stays whole when it
    fits), line breaks, sentences, words (as Unicode defines them: a hyphenated word may be cut at its
    hyphen). Only a single word over the limit is cut inside. Chunks have no leading or trailing whitespace;
    with ``overlap=0`` they hold every word of the text, in order, once. With ``overlap=n`` each chunk after
    the first starts with the whole words, at most ``n`` tokens, that ended the chunk before it.
    """
    if max_tokens < 1:
        raise InputError(f"max_tokens must be at least 1, not {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise InputError(f"overlap must be at least 0 and below max_tokens ({max_tokens}), not {overlap}")
    packer = _Packer(text, max_tokens - overlap, _sizer(counter, model), markdown)
    spans = packer.spans()
    if overlap:
        spans = packer.overlapped(spans, overlap, max_tokens)
    return [text[a:b] for a, b in spans]


class _Packer:
    """Greedy packing of boundary-delimited units into chunks; see the module docstring."""

    def __init__(self, text: str, max_tokens: int, sizer: _Sizer, markdown: bool) -> None:
        self.text = text
        self.max = max_tokens
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


# ---------------------------------------------------------------------------------------------------------
# Markdown blocks

BlockKind = Literal["heading", "paragraph", "list_item", "quote", "table", "code", "html", "math", "rule",
                    "front_matter", "blank"]
_NOT_TRANSLATED = {"code", "html", "math", "rule", "front_matter", "blank"}


@dataclass(frozen=True, slots=True)
class Block:
    """A piece of a markdown document. ``translatable`` is False for code, markup and blank lines."""

    kind: BlockKind
    text: str

    @property
    def translatable(self) -> bool:
        return self.kind not in _NOT_TRANSLATED


_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_ITEM = re.compile(r"^( {0,3})([-+*]|\d{1,9}[.)])([ \t]+|$)")
_QUOTE = re.compile(r"^ {0,3}>")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_HTML_OPEN = re.compile(r"^ {0,3}<(script|pre|style|textarea)(?:[\s>]|$)", re.IGNORECASE)
_COMMENT = re.compile(r"^ {0,3}<!--")
_MATH = re.compile(r"^ {0,3}\$\$")


def _indent(line: str) -> int:
    body = line.rstrip("\r\n")
    return len(body.expandtabs(4)) - len(body.expandtabs(4).lstrip(" "))


def _blank(line: str) -> bool:
    return not line.strip()


def markdown_blocks(text: str) -> list[Block]:
    """``text`` as a list of blocks; ``"".join(b.text for b in blocks) == text`` always.

    Fenced (``` and ~~~) and indented code, ``$$`` math, ``<script>/<pre>/<style>`` and comments, front
    matter and horizontal rules are kept out of translation. Headings, paragraphs, list items, quotes and
    tables are translatable. The parser follows CommonMark closely enough for translation, not rendering.
    """
    lines = re.findall(r"[^\n]*\n|[^\n]+", text)
    blocks: list[Block] = []
    n = len(lines)
    i = 0
    list_indent: int | None = None  # content column of the list we are in, if any

    def take(kind: BlockKind, j: int) -> None:
        nonlocal i
        blocks.append(Block(kind, "".join(lines[i:j])))
        i = j

    if n and lines[0].rstrip("\r\n") == "---":
        end = next((k for k in range(1, n) if lines[k].rstrip("\r\n") in ("---", "...")), None)
        if end is not None:
            take("front_matter", end + 1)

    while i < n:
        line = lines[i].rstrip("\r\n")
        if _blank(line):
            j = i
            while j < n and _blank(lines[j]):
                j += 1
            take("blank", j)
            continue
        fence = _FENCE.match(line)
        if fence:
            mark = fence.group(1)
            close = re.compile(rf"^[ \t]*{re.escape(mark[0])}{{{len(mark)},}}[ \t]*$")
            j = i + 1
            while j < n and not close.match(lines[j].rstrip("\r\n")):
                j += 1
            take("code", min(j + 1, n))
            continue
        html = _HTML_OPEN.match(line)
        if html or _COMMENT.match(line) or _MATH.match(line):
            if html:
                end_re = re.compile(rf"</{html.group(1)}>", re.IGNORECASE)
            elif _MATH.match(line):
                end_re = re.compile(r"\$\$")
                line = line.lstrip()[2:]  # the closing $$ may be on the opening line
            else:
                end_re = re.compile(r"-->")
            j = i
            rest = line
            while not end_re.search(rest) and j + 1 < n:
                j += 1
                rest = lines[j]
            take("math" if _MATH.match(lines[i]) else "html", j + 1)
            continue
        indent = _indent(line)
        if list_indent is not None and indent >= list_indent + 4 and blocks and blocks[-1].kind == "blank":
            kind: BlockKind = "code"
        elif list_indent is not None and indent >= list_indent:
            kind = "list_item"
        else:
            list_indent = None
            kind = "code" if indent >= 4 else "paragraph"
        if kind == "code":
            j = i + 1
            while j < n and (_indent(lines[j]) >= 4 + (list_indent or 0) or
                             (_blank(lines[j]) and j + 1 < n and _indent(lines[j + 1]) >= 4 + (list_indent or 0)
                              and not _blank(lines[j + 1]))):
                j += 1
            take("code", j)
            continue
        if _ATX.match(line):
            list_indent = None
            take("heading", i + 1)
            continue
        if _RULE.match(line):
            list_indent = None
            take("rule", i + 1)
            continue
        item = _ITEM.match(line)
        if item:
            list_indent = len(item.group(1)) + len(item.group(2)) + max(1, len(item.group(3).expandtabs(4)))
            kind = "list_item"
        elif _QUOTE.match(line):
            kind = "quote"
        elif "|" in line and i + 1 < n and _TABLE_RULE.match(lines[i + 1].rstrip("\r\n")):
            kind = "table"
        j = i + 1
        while j < n:
            nxt = lines[j].rstrip("\r\n")
            if _blank(nxt) or _FENCE.match(nxt) or _ATX.match(nxt) or _ITEM.match(nxt) and kind != "table":
                break
            if kind == "paragraph" and _SETEXT.match(nxt):
                j += 1
                kind = "heading"
                break
            if _RULE.match(nxt) or _HTML_OPEN.match(nxt) or _COMMENT.match(nxt) or _MATH.match(nxt):
                break
            if kind != "quote" and _QUOTE.match(nxt):
                break
            j += 1
        take(kind, j)
    return blocks


def group_blocks(blocks: Sequence[Block], max_tokens: int, counter: Any) -> list[list[Block]]:
    """Consecutive blocks packed into groups to translate together, in order.

    A group holds either translatable blocks (with the blank lines between them), at most ``max_tokens``
    tokens once its leading and trailing whitespace is set aside, or only blocks that are never translated.
    A translatable block over the limit is cut with the same boundaries as :func:`split` into pieces of the
    same kind, each in its own group; joining every group's blocks gives the text back unchanged.
    """
    if max_tokens < 1:
        raise InputError(f"max_tokens must be at least 1, not {max_tokens}")
    sizer = _sizer(counter, None)

    def size(group: list[Block]) -> int:
        return sizer.count("".join(b.text for b in group).strip())

    groups: list[list[Block]] = []
    current: list[Block] = []
    mode: bool | None = None  # None while the group holds only blank lines
    estimate = 0  # the group's blocks counted one by one, newlines included: rarely below the joined count

    def flush() -> None:
        nonlocal current, mode, estimate
        if current and mode and size(current) > max_tokens:
            groups.extend(_regroup(current, max_tokens, size))
        elif current:
            groups.append(current)
        current, mode, estimate = [], None, 0

    for block in blocks:
        if block.kind == "blank":
            current.append(block)
            estimate += sizer.count(block.text)
            continue
        if mode is not None and mode != block.translatable:
            flush()
        if not block.translatable:
            mode = False
            current.append(block)
            continue
        tokens = sizer.count(block.text)
        if tokens > max_tokens and sizer.count(block.text.strip()) > max_tokens:
            flush()
            groups.extend([piece] for piece in _pieces(block, max_tokens, sizer))
            continue
        if mode and estimate + tokens > max_tokens:
            flush()
        mode = True
        current.append(block)
        estimate += tokens
    flush()
    return groups


def _regroup(group: list[Block], max_tokens: int, size: Callable[[list[Block]], int]) -> list[list[Block]]:
    """Re-pack a group whose joined text came out over the limit, checking each addition exactly."""
    out: list[list[Block]] = []
    current: list[Block] = []
    for block in group:
        if block.kind != "blank" and any(b.kind != "blank" for b in current) and size([*current, block]) > max_tokens:
            out.append(current)
            current = []
        current.append(block)
    out.append(current)
    return out


def _pieces(block: Block, max_tokens: int, sizer: _Sizer) -> list[Block]:
    spans = _Packer(block.text, max_tokens, sizer, markdown=False).spans()
    cuts = [0] + [start for start, _ in spans[1:]] + [len(block.text)]
    return [Block(block.kind, block.text[a:b]) for a, b in zip(cuts, cuts[1:], strict=False) if a < b]


# ---------------------------------------------------------------------------------------------------------
# Relevance

# Kana, CJK ideographs and Hangul count one character per term; other scripts count runs of word characters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TERM = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")


def _terms(text: str) -> list[str]:
    return _TERM.findall(text.lower())


def select_relevant(chunks: Sequence[str], question: str, max_tokens: int, counter: Any) -> list[int]:
    """Indices, in document order, of the chunks that best answer ``question`` within ``max_tokens``.

    Chunks are ranked by BM25 (k1=1.5, b=0.75) over lower-cased word terms of the question (single
    characters for Chinese, Japanese and Korean), ties going to the earlier chunk, and taken in rank order
    while they fit; a chunk too big for what is left is skipped for smaller ones further down. Chunks that
    share no term with the question still fill leftover room, earliest first.
    """
    if not chunks:
        return []
    sizer = _sizer(counter, None)
    docs = [_Bag(_terms(c)) for c in chunks]
    lengths = [sum(d.values()) for d in docs]
    avg = (sum(lengths) / len(docs)) or 1.0
    query = set(_terms(question))
    df = {t: sum(1 for d in docs if t in d) for t in query}
    k1, b = 1.5, 0.75
    scores = []
    for d, length in zip(docs, lengths, strict=True):
        score = 0.0
        for t in query:
            tf = d.get(t, 0)
            if tf:
                idf = math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))
        scores.append(score)
    order = sorted(range(len(chunks)), key=lambda k: (-scores[k], k))
    sizes = sizer.count_many(list(chunks))
    room, keep = max_tokens, []
    for k in order:
        if sizes[k] <= room:
            keep.append(k)
            room -= sizes[k]
    return sorted(keep)
