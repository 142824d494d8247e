"""Checking a news draft against its facts, deterministically (no model): the numbers, dates, names and
quotations the draft states must appear in the facts it was written from.

- **Numbers** are compared by value after normalising how they are written: "1.5 million", "1,500,000",
  "1.500.000", German "1,5 Mio.", Chinese "150万" and "1.5亿" (and Chinese numerals such as 三百五十万) are
  numbers like any other; percentages and currency signs are ignored. A number written with a scale word and a
  decimal ("2.3 million") also matches a fact it rounds ("2,31 Mio."). Number words in the facts ("three")
  count for digits in the draft. Where a separator is ambiguous ("1,500" is 1500 in English and 1.5 in
  German) either reading matches.
- **Dates**: "5 March 2024", "March 5, 2024", "2024-03-05", "05.03.2024", "5. März 2024", "2024年3月5日" and
  partial ones ("March 5", "March 2024") are compared by their parts; a year the draft adds must be in the
  facts somewhere.
- **Names**: runs of capitalised words (and, outside German, single capitalised words inside a sentence) are
  checked word by word: each must occur in the facts, in any case. Headlines in title case, sentence starts,
  months and weekdays are not names. Chinese, Japanese and Korean names are not detected.
- **Quotations** in "…", “…”, „…“, «…» or 「…」 must be exact substrings of the facts (spacing aside).

The report gives the share of these items that the facts support; :func:`review_news` lists the others in the
result's warnings, or, with ``strict``, fails the item with :class:`~aigc.errors.FactCheckFailed`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import FactCheckFailed
from .numbers import Dates, Numbers

__all__ = ["Claim", "FactReport", "check", "review_news"]


@dataclass(frozen=True)
class Claim:
    """One checkable item of the draft."""

    kind: str  # "number", "date", "name" or "quotation"
    text: str  # as the draft writes it
    supported: bool


@dataclass
class FactReport:
    claims: list[Claim] = field(default_factory=list)

    @property
    def unsupported(self) -> list[Claim]:
        return [c for c in self.claims if not c.supported]

    @property
    def share(self) -> float:
        """The share of the draft's items that the facts support (1.0 when it states none)."""
        return 1.0 - len(self.unsupported) / len(self.claims) if self.claims else 1.0

    def lines(self) -> list[str]:
        return [f"not in the facts: {c.kind} “{c.text}”" for c in self.unsupported]


_QUOTES = re.compile(r"“([^”]{2,}?)”|„([^“”]{2,}?)[“”]|«\s?([^»]{2,}?)\s?»|「([^」]{2,}?)」|『([^』]{2,}?)』|"
                     r"\"([^\"\n]{2,}?)\"")
_WORD = re.compile(r"[^\W\d_][\w'’.-]*", re.UNICODE)
_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "del", "la", "le", "du", "bin", "al", "y", "zu", "ten"}
_NOT_NAMES = {
    "i", "mr", "mrs", "ms", "dr", "prof", "sir", "st", "the", "a", "an", "and", "but", "or", "in", "on", "at",
    "it", "he", "she", "they", "we", "you", "this", "that", "these", "those", "his", "her", "their", "its",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "montag", "dienstag",
    "mittwoch", "donnerstag", "freitag", "samstag", "sonntag", "der", "die", "das", "ein", "eine", "dem", "den",
    "des", "le", "la", "les", "el", "los", "il"}
_GERMAN = re.compile(r"\b(der|die|das|und|nicht|mit|für|ist|sind|sich|auf|dem|den|des|ein|eine|einen|wurde|wird|"
                     r"am|im|vom|zum|zur|bei|über|nach|auch|von)\b", re.I)
_SPACES = re.compile(r"\s+")


def _squash(text: str) -> str:
    return _SPACES.sub(" ", text.replace("’", "'").replace("‘", "'")).strip()


def _quotations(draft: str, facts: str) -> tuple[list[Claim], str]:
    """The draft's quotations, and the draft with them blanked out (their words are the source's)."""
    flat = _squash(facts)
    claims, rest = [], draft
    for m in _QUOTES.finditer(draft):
        quoted = next(g for g in m.groups() if g is not None).strip()
        if len(quoted.split()) < 2 and len(quoted) < 12:
            continue  # a scare-quoted word, not a quotation
        claims.append(Claim("quotation", quoted, _squash(quoted) in flat))
        rest = rest.replace(m.group(), " " * len(m.group()), 1)
    return claims, rest


def _title_case(line: str) -> bool:
    """A headline in title case ("Council Approves Harbour Budget"): short, no full stop, mostly capitals."""
    words = [w for w in _WORD.findall(line) if len(w) > 3]
    short = len(line.split()) <= 16 and not line.rstrip().endswith(".")
    return short and len(words) >= 3 and sum(w[0].isupper() for w in words) >= 0.7 * len(words)


def _names(draft: str, facts: str) -> list[Claim]:
    known = {w.rstrip(".-").lower() for w in _WORD.findall(facts)}
    hits = len(_GERMAN.findall(draft))
    # German capitalises every noun: there, only runs of capitalised words count as names.
    single_words = not (hits >= 2 and hits >= 0.04 * len(draft.split()))
    claims, seen = [], set()
    for line in draft.splitlines():
        if _title_case(line):
            continue  # a headline: every word is capitalised
        for sentence in re.split(r"(?<=[.!?:;])\s+|^\s*[-*•]\s+", line):
            words = list(_WORD.finditer(sentence))
            i = 0
            while i < len(words):
                run = _run(words, i, sentence)
                if not run:
                    i += 1
                    continue
                i += len(run)
                names = [w.group().rstrip(".-") for w in run]
                at_start = run[0].start() == len(sentence) - len(sentence.lstrip())
                if at_start and names[0].lower() in _NOT_NAMES:
                    names = names[1:]  # "The Mayor", "Der Rat": the sentence's first word is no name
                if not names or len(names) == 1 and (at_start or not single_words):
                    continue
                text = " ".join(names)
                if text not in seen and not all(n.lower() in _NOT_NAMES for n in names):
                    seen.add(text)
                    ok = all(n.lower() in known or n.lower() in _PARTICLES or n.lower() in _NOT_NAMES
                             for n in names)
                    claims.append(Claim("name", text, ok))
    return claims


def _run(words: list[re.Match], i: int, sentence: str) -> list[re.Match]:
    """The capitalised run starting at ``words[i]`` (particles inside it allowed), or []."""
    if not words[i].group()[0].isupper() or words[i].group().lower() in Dates.MONTH_WORDS:
        return []
    run = [words[i]]
    j = i + 1
    while j < len(words) and sentence[run[-1].end():words[j].start()].strip() in ("", "-"):
        word = words[j].group()
        capital = word[0].isupper() and word.lower() not in Dates.MONTH_WORDS
        particle = word.lower() in _PARTICLES and j + 1 < len(words) and words[j + 1].group()[0].isupper()
        if not (capital or particle):
            break
        run.append(words[j])
        j += 1
    return run


def check(draft: str, facts: str) -> FactReport:
    """Every number, date, name and quotation of ``draft``, and whether ``facts`` supports it."""
    quotations, rest = _quotations(draft, facts)
    date_claims, rest = Dates(facts).claims(rest, Claim)
    number_claims, rest = Numbers(facts).claims(rest, Claim)
    return FactReport(quotations + date_claims + number_claims + _names(rest, facts))


def review_news(variables: dict[str, Any], outcome: Any) -> Any:
    """The news task's review: its draft checked against its facts; unsupported items become warnings, or,
    with ``strict``, a FactCheckFailed carrying the draft."""
    report = check(outcome.text, str(variables.get("facts") or ""))
    if not report.claims:
        return outcome
    summary = (f"fact check: {len(report.claims) - len(report.unsupported)} of {len(report.claims)} numbers, "
               f"dates, names and quotations in the draft appear in the facts ({report.share:.0%})")
    if report.unsupported and variables.get("strict"):
        raise FactCheckFailed(f"{summary}; " + "; ".join(report.lines()) + " (strict: the draft was not "
                              "delivered; drop --strict to get it with warnings)", text=outcome.text,
                              unsupported=[c.text for c in report.unsupported])
    return dataclasses.replace(outcome, warnings=[*outcome.warnings, summary, *report.lines()])
