"""A markdown document as blocks (headings, paragraphs, lists, code...). Code is never offered for
translation, and joining the blocks gives the text back byte for byte."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Block", "markdown_blocks"]

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
