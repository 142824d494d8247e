"""Numbers and dates as written in English, German and Chinese, read into values the fact check can compare
("1.5 million" = "1,500,000" = "1,5 Mio." = "150万"; "5 March 2024" = "2024-03-05" = "2024年3月5日")."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["Numbers", "Dates", "read_number", "chinese_numeral"]

_SCALE_WORDS = {
    "thousand": 1e3, "thousands": 1e3, "k": 1e3, "tausend": 1e3, "tsd": 1e3,
    "million": 1e6, "millions": 1e6, "mn": 1e6, "mio": 1e6, "millionen": 1e6, "millon": 1e6, "millones": 1e6,
    "billion": 1e9, "billions": 1e9, "bn": 1e9, "mrd": 1e9, "milliarde": 1e9, "milliarden": 1e9,
    "trillion": 1e12, "billionen": 1e12,
}
_CJK_SCALES = {"千": 1e3, "万": 1e4, "萬": 1e4, "百万": 1e6, "千万": 1e7, "亿": 1e8, "億": 1e8}
_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "hundred": 100, "dozen": 12, "zwei": 2, "drei": 3, "vier": 4, "fünf": 5, "sechs": 6, "sieben": 7, "acht": 8,
    "neun": 9, "zehn": 10, "elf": 11, "zwölf": 12, "zwanzig": 20, "dreißig": 30, "hundert": 100,
}
_SCALE = "|".join(sorted(map(re.escape, _SCALE_WORDS), key=len, reverse=True))
_CJK_SCALE = "|".join(sorted(map(re.escape, _CJK_SCALES), key=len, reverse=True))
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.,])(?P<digits>\d{1,3}(?:(?P<sep>[,.'\u00a0\u202f ])\d{3})(?:(?P=sep)\d{3})*(?:[.,]\d+)?(?![\d])"
    r"|\d+(?:[.,]\d+)?(?![\d]))"
    rf"(?:st|nd|rd|th)?(?:\s*(?P<scale>{_SCALE})\b\.?|\s*(?P<cjk>{_CJK_SCALE}))?", re.IGNORECASE)
_CJK_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
               "八": 8, "九": 9}
_CJK_UNITS = {"十": 10, "百": 100, "千": 1000}
_CJK_BIG = {"万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8}
_CJK_NUMERAL = re.compile("[〇零一二两兩三四五六七八九十百千万萬亿億]{2,}")


def chinese_numeral(text: str) -> int | None:
    """三百五十万 → 3500000; None when ``text`` is not a well-formed numeral."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CJK_DIGITS:
            if digit is not None:
                return None  # two digits in a row: not a numeral (a year such as 二〇二四 reads digit by digit)
            digit = _CJK_DIGITS[ch]
        elif ch in _CJK_UNITS:
            section += (1 if digit is None else digit) * _CJK_UNITS[ch]
            digit = None
        elif ch in _CJK_BIG:
            total += (section + (digit or 0)) * _CJK_BIG[ch]
            section, digit = 0, None
    return total + section + (digit or 0)


def read_number(match: re.Match) -> tuple[set[float], float]:
    """The values a number match may mean (a lone "1,500" may be 1500 or 1.5) and how precisely it is given
    (the unit of its last written digit, scaled: "2.3 million" is precise to 100,000)."""
    digits, sep = match.group("digits"), match.group("sep")
    scale = _SCALE_WORDS.get((match.group("scale") or "").lower().rstrip("."), 1.0)
    scale *= _CJK_SCALES.get(match.group("cjk") or "", 1.0)
    readings: set[tuple[float, int]] = set()
    parts = re.split(r"([,.'\u00a0\u202f ])", digits)
    numbers, marks = parts[0::2], parts[1::2]
    if marks and marks[-1] != sep:  # grouped thousands, then a decimal part after the other mark
        readings.add((float("".join(numbers[:-1]) + "." + numbers[-1]), len(numbers[-1])))
    elif sep:
        readings.add((float("".join(numbers)), 0))
        if len(marks) == 1 and sep in ",.":  # "1,500" or "1.500": also a decimal comma or point
            readings.add((float(digits.replace(sep, ".")), 3))
    else:
        normal = digits.replace(",", ".")
        readings.add((float(normal), len(normal.partition(".")[2])))
    values = {v * scale for v, _ in readings}
    places = min(p for _, p in readings)
    precision = scale * 10 ** -places if scale > 1 and places else 0.0
    return values, precision


class Numbers:
    """The numbers of a text of facts, to check a draft's numbers against."""

    def __init__(self, facts: str) -> None:
        self.values: set[float] = set()
        for m in _NUMBER.finditer(facts):
            self.values |= read_number(m)[0]
        for m in _CJK_NUMERAL.finditer(facts):
            if (value := chinese_numeral(m.group())) is not None:
                self.values.add(float(value))
        for word in re.findall(r"[^\W\d_]+", facts.lower()):
            if word in _WORDS:
                self.values.add(float(_WORDS[word]))

    def supports(self, values: set[float], precision: float) -> bool:
        for value in values:
            for known in self.values:
                if math.isclose(value, known, rel_tol=1e-9, abs_tol=1e-9):
                    return True
                if precision and abs(value - known) <= precision / 2 + 1e-9 * abs(known):
                    return True
        return False

    def claims(self, draft: str, claim: Callable[..., Any]) -> tuple[list[Any], str]:
        """The draft's numbers as claims, and the draft with them blanked (a scale word is no name)."""
        out, rest = [], draft
        for m in [*_NUMBER.finditer(draft), *_CJK_NUMERAL.finditer(draft)]:
            if m.re is _NUMBER:
                values, precision = read_number(m)
            elif (value := chinese_numeral(m.group())) is not None:
                values, precision = {float(value)}, 0.0
            else:
                continue
            out.append(claim("number", m.group().strip(), self.supports(values, precision)))
            rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
        return out, rest


_MONTHS = {
    "january": 1, "jan": 1, "januar": 1, "jänner": 1, "february": 2, "feb": 2, "februar": 2, "march": 3,
    "mar": 3, "märz": 3, "april": 4, "apr": 4, "may": 5, "mai": 5, "june": 6, "jun": 6, "juni": 6, "july": 7,
    "jul": 7, "juli": 7, "august": 8, "aug": 8, "september": 9, "sep": 9, "sept": 9, "october": 10, "oct": 10,
    "oktober": 10, "okt": 10, "november": 11, "nov": 11, "december": 12, "dec": 12, "dezember": 12, "dez": 12,
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)?"
Date = tuple[int | None, int, int | None]  # year, month, day
_DATES: list[tuple[re.Pattern, Callable[[re.Match], list[Date]]]] = [
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), lambda m: [(int(m[1]), int(m[2]), int(m[3]))]),
    (re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月(?:\s*(\d{1,2})\s*[日号])?"),
     lambda m: [(int(m[1]), int(m[2]), int(m[3]) if m[3] else None)]),
    (re.compile(r"(?<!\d)(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]"), lambda m: [(None, int(m[1]), int(m[2]))]),
    (re.compile(rf"\b(\d{{1,2}}){_ORD}\.?\s+(?:of\s+)?({_MONTH})\b\.?,?(?:\s+(\d{{4}})\b)?", re.I),
     lambda m: [(int(m[3]) if m[3] else None, _MONTHS[m[2].lower()], int(m[1]))]),
    (re.compile(rf"\b({_MONTH})\b\.?\s+(\d{{1,2}}){_ORD}\b(?:,?\s+(\d{{4}})\b)?", re.I),
     lambda m: [(int(m[3]) if m[3] else None, _MONTHS[m[1].lower()], int(m[2]))]),
    (re.compile(rf"\b({_MONTH})\b\.?,?\s+(\d{{4}})\b", re.I), lambda m: [(int(m[2]), _MONTHS[m[1].lower()], None)]),
    (re.compile(r"\b(\d{1,2})\.(\d{1,2})\.(\d{4})\b"), lambda m: [(int(m[3]), int(m[2]), int(m[1]))]),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"),
     lambda m: [(int(m[3]), int(m[1]), int(m[2])), (int(m[3]), int(m[2]), int(m[1]))]),
]


def _find_dates(text: str) -> list[tuple[int, int, list[Date]]]:
    """(start, end, readings) of each date in ``text``, the first pattern to claim a span winning."""
    found: list[tuple[int, int, list[Date]]] = []
    for pattern, read in _DATES:
        for m in pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e, _ in found):
                continue
            readings = [d for d in read(m) if 1 <= d[1] <= 12 and (d[2] is None or 1 <= d[2] <= 31)]
            if readings:
                found.append((m.start(), m.end(), readings))
    return sorted(found)


class Dates:
    """The dates of a text of facts, to check a draft's dates against."""

    MONTH_WORDS = frozenset(_MONTHS)

    def __init__(self, facts: str) -> None:
        self.known = [d for _, _, readings in _find_dates(facts) for d in readings]
        self.years = {int(y) for y in re.findall(r"(?<!\d)(\d{4})(?!\d)", facts)}

    def supports(self, readings: list[Date]) -> bool:
        for year, month, day in readings:
            for k_year, k_month, k_day in self.known:
                if month != k_month or (day is not None and day != k_day):
                    continue
                if year is None or year == k_year or (k_year is None and year in self.years):
                    return True
        return False

    def claims(self, draft: str, claim: Callable[..., Any]) -> tuple[list[Any], str]:
        """The draft's dates as claims, and the draft with them blanked (their numbers are checked here)."""
        out, rest = [], draft
        for start, end, readings in _find_dates(draft):
            out.append(claim("date", draft[start:end].strip(), self.supports(readings)))
            rest = rest[:start] + " " * (end - start) + rest[end:]
        return out, rest
