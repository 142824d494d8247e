"""Knowledge files: the passages a conversation (the ``support`` persona, ``--knowledge faq.md``) answers from.

Files (``.md``, ``.markdown``, ``.txt``, ``.rst``; folders are searched for them) are cut into passages once,
each named by its file and number (``faq.md#3``). For a question, the passages that share a *content word* with
it (not a stop word such as "the" or "how"; single characters for Chinese, Japanese and Korean) are ranked by
BM25 and taken, best first, while they fit a token budget. When none shares one, :meth:`Knowledge.select`
returns none: the support persona then says it does not know, without asking the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chunking import split
from .chunking.relevance import BM25, fill_ranked, terms
from .errors import InputError
from .textio import decode_text

__all__ = ["Passage", "Knowledge", "SUFFIXES"]

SUFFIXES = (".md", ".markdown", ".txt", ".rst")
# Words too common to say what a question is about (English, German, French, Spanish), and CJK particles.
_STOP = """
a about after all also am an and any are as at be been but by can could did do does for from get got had has
have how i if in into is it its just me my no not of on or our so than that the their them then there these
they this to up us was we what when where which who why will with would you your yes please hello hi thanks
thank okay ok tell know want need like does doing much many more some
der die das und ist sind ein eine einen mit für von zu im in wie was wann wo warum ich sie wir ihr es auf bei
nicht kann können bitte hallo danke
le la les un une des et est sont de du en que qui pour avec dans je vous nous il elle pas ce cette bonjour merci
el los las y es son del que por para con en yo usted hola gracias
的 了 是 我 你 他 她 们 吗 呢 在 有 和 就 都 也 这 那 个 什 么 怎 吧 啊 请 谢
"""
STOP_WORDS = frozenset(_STOP.split())


@dataclass(frozen=True)
class Passage:
    source: str  # file and passage number, e.g. "faq.md#3"
    text: str


def content_terms(text: str) -> list[str]:
    """The words of ``text`` that say what it is about (stop words and one-letter words dropped)."""
    return [t for t in terms(text) if t not in STOP_WORDS and (len(t) > 1 or ord(t[0]) > 0x2E80)]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if path.is_file():
        return [path]
    raise InputError(f"knowledge file {path} does not exist")


class Knowledge:
    """Passages from files, and the choice of those relevant to a question."""

    def __init__(self, passages: list[Passage], paths: list[str]) -> None:
        self.passages = passages
        self.paths = paths
        self._index: BM25 | None = None

    @classmethod
    def load(cls, paths: list[str | Path], counter: Any, *, passage_tokens: int = 200) -> Knowledge:
        """Read and cut the files (``counter``: the model's tokenizer, or a function counting tokens)."""
        passages: list[Passage] = []
        for given in paths:
            root = Path(given).expanduser()
            for file in _files(root):
                name = file.relative_to(root).as_posix() if root.is_dir() else file.name
                try:
                    text = decode_text(file.read_bytes(), str(file))
                except OSError as e:
                    raise InputError(f"cannot read the knowledge file {file}: {e.strerror}") from None
                for i, chunk in enumerate(split(text, passage_tokens, counter=counter, markdown=True), 1):
                    passages.append(Passage(f"{name}#{i}", chunk))
        if paths and not passages:
            raise InputError(f"no text in the knowledge files {', '.join(map(str, paths))} (looked for "
                             f"{', '.join(SUFFIXES)} files)")
        return cls(passages, [str(Path(p).expanduser().resolve()) for p in paths])

    def select(self, question: str, room_tokens: int, count: Any) -> list[Passage]:
        """The passages that share a content word with ``question``, best first, within ``room_tokens``
        (``count``: a function giving a text's tokens)."""
        query = content_terms(question)
        if not query or not self.passages:
            return []
        if self._index is None:
            self._index = BM25([p.text for p in self.passages])
        scores = self._index.scores(query)  # the terms are folded already: not again
        ranked = sorted((k for k in range(len(scores)) if scores[k] > 0), key=lambda k: (-scores[k], k))
        keep = fill_ranked(ranked, lambda k: count(self.passages[k].text) + 8, room_tokens)
        return [self.passages[k] for k in keep]
