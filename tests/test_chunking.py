"""Splitting documents by tokens, markdown blocks for translation, and picking passages for answers."""

from __future__ import annotations

import random
import re

import pytest

try:  # Hugging Face tokenizers come with the local extra; without it those cases are deselected (-m "not local")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
except ImportError:
    Tokenizer = None

from aigc.chunking import Block, group_blocks, markdown_blocks, select_relevant, split
from aigc.errors import InputError
from aigc.tokens import get_encoding

_VOCABULARY = ("river market council school doctor question answer morning evening summer winter number system "
         "program research history science music family village north south company policy energy forest "
         "island bridge naïve café 漢字 don't it's e-mail 3.14 2024")
WORDS = _VOCABULARY.split()


def prose(paragraphs: int, seed: int = 1, *, line_breaks: bool = False) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 25))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".?!"))
        out.append(("\n" if line_breaks else " ").join(sentences))
    return "\n\n".join(out) + "\n"


def word_level_tokenizer(text: str, *, truncate: int | None = None):
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    if truncate:
        tok.enable_truncation(truncate)
    return tok


DOC = prose(60) + "One very long paragraph. " * 400 + "\n\n" + prose(5, seed=2, line_breaks=True) + "漢字" * 3000


_LETTER = re.compile(r"[\w'\u2019]")


def assert_whole_words(text: str, chunks: list[str]) -> None:
    """The chunks are the text, in order, less the whitespace between them, and no cut falls inside a word."""
    pos = 0
    for chunk in chunks:
        at = text.find(chunk, pos)
        assert at >= 0 and not text[pos:at].strip(), f"text lost or reordered before {chunk[:40]!r}"
        if at == pos > 0 and _LETTER.match(text[at - 1]) and _LETTER.match(text[at]):
            assert "\u4e00" <= text[at] <= "\u9fff", f"word cut: {text[at - 15:at]!r} | {text[at:at + 15]!r}"
        pos = at + len(chunk)
    assert not text[pos:].strip()


class Wrapped:
    """Looks like a transformers fast tokenizer: the real one sits in ``backend_tokenizer``."""

    def __init__(self, tok) -> None:
        self.backend_tokenizer = tok


class Encodes:
    """Any object with ``encode``."""

    def encode(self, text: str) -> list[str]:
        return text.split()


HF = ("hf-tokenizer", "transformers-like")


def _counters():
    counters = {
        "o200k": (get_encoding("o200k_base"), lambda s: len(get_encoding("o200k_base").encode_ordinary(s))),
        "cl100k": (get_encoding("cl100k_base"), lambda s: len(get_encoding("cl100k_base").encode_ordinary(s))),
        "encode-object": (Encodes(), lambda s: len(s.split())),
        "callable": (lambda s: len(s) // 4 + 1, lambda s: len(s) // 4 + 1),
    }
    if Tokenizer is not None:
        hf = word_level_tokenizer(DOC)
        counters["hf-tokenizer"] = (hf, lambda s: len(hf.encode(s, add_special_tokens=False)))
        counters["transformers-like"] = (Wrapped(hf), lambda s: len(hf.encode(s, add_special_tokens=False)))
    return counters


COUNTERS = _counters()


def counter_names(*names: str) -> list:
    """Counter names as parameters; the Hugging Face ones need the local extra."""
    return [pytest.param(n, marks=pytest.mark.local) if n in HF else n
            for n in (names or ("o200k", "cl100k", *HF, "encode-object", "callable"))]


@pytest.mark.parametrize("markdown", [False, True], ids=["text", "markdown"])
@pytest.mark.parametrize("max_tokens", [40, 700])
@pytest.mark.parametrize("name", counter_names())
def test_split_keeps_every_word_in_order_within_the_limit(name, max_tokens, markdown):
    counter, measure = COUNTERS[name]
    chunks = split(DOC, max_tokens, counter=counter, markdown=markdown)
    assert_whole_words(DOC, chunks)
    assert all(measure(c) <= max_tokens for c in chunks)
    assert all(c == c.strip() and c for c in chunks)
    assert len(chunks) < 2 * measure(DOC) / max_tokens + 5  # chunks are filled, not crumbs


def test_split_by_model_uses_its_encoding():
    chunks = split(DOC, 300, model="gpt-3.5-turbo")
    cl100k = get_encoding("cl100k_base")
    assert max(len(cl100k.encode_ordinary(c)) for c in chunks) <= 300
    assert split(DOC, 300, model="gpt-3.5-turbo") != split(DOC, 300, model="gpt-4o")


def test_split_prefers_paragraphs_then_sentences():
    first, second, third = "First paragraph has words.", "Second one is here.", "Third. " * 30
    text = f"{first}\n\n{second}\n\n{third}"
    enc = get_encoding("o200k_base")
    limit = len(enc.encode_ordinary(f"{first}\n\n{second}")) + 1
    chunks = split(text, limit, counter=enc)
    assert chunks[0] == f"{first}\n\n{second}"
    assert all(c.endswith(".") for c in chunks)  # the long paragraph is cut between sentences


def test_markdown_split_keeps_a_code_block_whole():
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(30)) + "\n```"
    text = prose(3) + "\n" + code + "\n\n" + prose(3, seed=5)
    enc = get_encoding("o200k_base")
    limit = len(enc.encode_ordinary(code)) + 10
    assert code in split(text, limit, counter=enc, markdown=True)


@pytest.mark.local
def test_hf_tokenizer_truncation_is_ignored_and_left_alone():
    tok = word_level_tokenizer(DOC, truncate=8)
    chunks = split(DOC, 100, counter=tok)
    untruncated = word_level_tokenizer(DOC)
    assert max(len(untruncated.encode(c, add_special_tokens=False)) for c in chunks) <= 100
    assert len(chunks) > len(DOC.split()) / 100
    assert tok.truncation is not None  # the caller's tokenizer is unchanged


@pytest.mark.parametrize("name", counter_names("o200k", "hf-tokenizer", "callable"))
def test_overlap_repeats_the_last_words_of_each_chunk(name):
    counter, measure = COUNTERS[name]
    text = prose(20)
    chunks = split(text, 60, counter=counter, overlap=20)
    assert len(chunks) > 2 and all(measure(c) <= 60 for c in chunks)
    ends, start, overlapping = [], -1, 0
    for chunk in chunks:
        start = text.find(chunk, start + 1)
        if ends and start < ends[-1]:
            overlapping += 1
            assert measure(text[start:ends[-1]]) <= 20  # the repeated part
            assert text[start - 1].isspace() or not _LETTER.match(text[start])  # made of whole words
        elif ends:
            assert not text[ends[-1]:start].strip()  # no gap
        ends.append(start + len(chunk))
    assert overlapping >= len(chunks) // 2


@pytest.mark.parametrize("text", ["", "   \n\n\t "])
def test_split_of_nothing_is_empty(text):
    assert split(text, 10) == []


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_split_rejects_impossible_sizes(max_tokens, overlap):
    with pytest.raises(InputError):
        split("some text", max_tokens, overlap=overlap)


# -- markdown blocks ------------------------------------------------------------------------------------

MARKDOWN = """---
title: Front matter
---

# Title

Intro paragraph that
spans two lines.

```python
x = 1  # never translated
```

- item one
  continued
- item two

      code inside the list

  list paragraph after a blank line

> a quote
that continues

| a | b |
|---|---|
| 1 | 2 |

Setext heading
==============

***

<pre>
preformatted
</pre>

<!-- a comment -->

$$
E = mc^2
$$

    indented code

Last paragraph without newline"""


@pytest.mark.parametrize(
    "text",
    [MARKDOWN, MARKDOWN.replace("\n", "\r\n"), MARKDOWN.replace("    ", "\t"), "", "\n\n", "no newline",
     "```\nunclosed fence\n\nstill code", "~~~~\n~~~\nstill code\n~~~~\nafter"],
    ids=["doc", "crlf", "tabs", "empty", "blank", "one-line", "unclosed", "longer-fence"],
)
def test_markdown_blocks_join_back_exactly(text):
    assert "".join(b.text for b in markdown_blocks(text)) == text


def test_markdown_block_kinds():
    kinds = [(b.kind, b.translatable) for b in markdown_blocks(MARKDOWN) if b.kind != "blank"]
    assert kinds == [
        ("front_matter", False), ("heading", True), ("paragraph", True), ("code", False), ("list_item", True),
        ("list_item", True), ("code", False), ("list_item", True), ("quote", True), ("table", True),
        ("heading", True), ("rule", False), ("html", False), ("html", False), ("math", False), ("code", False),
        ("paragraph", True),
    ]


@pytest.mark.parametrize("secret", ["x = 1", "code inside the list", "preformatted", "E = mc^2", "indented code",
                                    "a comment", "Front matter"])
def test_code_and_markup_are_never_translatable(secret):
    assert not any(secret in b.text for b in markdown_blocks(MARKDOWN) if b.translatable)


@pytest.mark.parametrize("max_tokens", [8, 30, 2000])
def test_group_blocks(max_tokens):
    enc = get_encoding("o200k_base")
    text = MARKDOWN + "\n\n" + prose(4, seed=9)
    groups = group_blocks(markdown_blocks(text), max_tokens, enc)
    assert "".join(b.text for g in groups for b in g) == text
    for group in groups:
        translatable = [b.translatable for b in group if b.kind != "blank"]
        assert all(translatable) or not any(translatable)  # never code and prose together
        if any(translatable):
            assert len(enc.encode_ordinary("".join(b.text for b in group).strip())) <= max_tokens
    if max_tokens == 2000:  # everything translatable between two pieces of code goes together
        assert [b.kind for b in groups[-1] if b.kind != "blank"] == ["paragraph"] * 5


def test_oversize_paragraph_is_cut_into_pieces_of_the_same_kind():
    paragraph = "A sentence that goes on. " * 40 + "\n"
    blocks = [Block("heading", "# Title\n"), Block("blank", "\n"), Block("paragraph", paragraph)]
    groups = group_blocks(blocks, 25, get_encoding("o200k_base"))
    pieces = [g[0] for g in groups[1:]]
    assert len(pieces) > 3 and all(len(g) == 1 for g in groups[1:])
    assert {p.kind for p in pieces} == {"paragraph"}
    assert "".join(p.text for p in pieces) == paragraph


# -- relevance ------------------------------------------------------------------------------------------

PASSAGES = [
    "The river flooded the village market in spring.",
    "Photosynthesis turns light, water and carbon dioxide into sugar in plant leaves.",
    "The council voted to rebuild the bridge over the river next summer.",
    "Chess openings: the Sicilian defence and the French defence.",
    "Plants need light; leaves hold chlorophyll, which absorbs light for photosynthesis.",
]


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize(
    ("question", "budget", "expected"),
    [
        ("How does photosynthesis use light?", 100, [0, 1, 2, 3, 4]),  # everything fits
        ("How does photosynthesis use light?", 25, [1, 4]),
        ("How does photosynthesis use light?", 13, [4]),
        ("When will the bridge over the river be rebuilt?", 13, [2]),
        ("What about the Sicilian defence?", 9, [3]),
        ("Something unrelated entirely", 18, [0, 3]),  # no match: earliest chunks that fit
        ("PHOTOSYNTHESIS", 12, [4]),  # case does not matter; the shorter match scores higher
    ],
)
def test_select_relevant(question, budget, expected):
    assert select_relevant(PASSAGES, question, budget, words) == expected


def test_select_relevant_breaks_ties_by_position():
    assert select_relevant(["apple pie", "pear", "apple tart"], "apple", 2, words) == [0]


def test_select_relevant_reads_chinese_by_character():
    passages = ["今天天气很好，我们去公园散步。", "光合作用需要光和水。", "银行明天不开门。"]
    assert select_relevant(passages, "光合作用是什么？", 1, lambda s: 1) == [1]


def test_select_relevant_of_nothing():
    assert select_relevant([], "question", 100, words) == []
