"""Personal data kept away from the model (``redact``, ``--redact``): values replaced by placeholders before a
request is sent, and put back where the reply echoes them. (Secrets in URLs and error text: :mod:`aigc.redact`.)

What is detected (and nothing else):

- ``EMAIL`` — addresses of the form ``local@domain.tld``.
- ``PHONE`` — numbers that Google's libphonenumber (the ``phonenumbers`` package) finds and judges *valid*:
  any number written with its country code (``+49 30 1234567``, ``0049 …`` is not), and, with a region
  (``redact_region="DE"`` / ``--region DE``), numbers written the national way (``030 1234567``). Without a
  region, national-format numbers are **not** detected.
- ``CARD`` — 13 to 19 digits (spaces or dashes between them allowed) that pass the Luhn check. Any such
  number is taken, so a Luhn-valid order or reference number is replaced too (and restored).
- ``IBAN`` — account numbers in IBAN form whose country format and mod-97 checksum are valid (python-stdnum).
  National account numbers without an IBAN, sort codes and routing numbers are **not** detected.

Names, postal addresses, dates of birth, national ID numbers and free-text secrets are not detected: redact
them yourself before calling, or do not send them.

Within one call (one item of a job, one conversation turn) the same value always gets the same placeholder
(``<PHONE_1>``), so the model can refer to it consistently across the requests of a long document; values are
compared in a normal form (E.164 phones, digits-only cards, compact IBANs, lower-case e-mails). The reply's
placeholders are replaced by the values as first written. Only counts leave this module (``Result.redactions``,
the ledger), never the values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError

__all__ = ["Redactor", "KINDS", "PLACEHOLDER"]

KINDS = ("EMAIL", "IBAN", "CARD", "PHONE")  # in this order: an e-mail or IBAN may contain digits a phone could claim
PLACEHOLDER = re.compile(r"<(EMAIL|IBAN|CARD|PHONE)_(\d+)>")
# Also put back a placeholder whose brackets the model dropped or changed ("PHONE_1", "[PHONE_1]").
_ECHO = re.compile(r"[<\[]?\b(EMAIL|IBAN|CARD|PHONE)_(\d+)\b[>\]]?")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")

Span = tuple[int, int, str, str]  # start, end, kind, normal form


def _emails(text: str, region: str | None) -> Iterator[Span]:
    for m in _EMAIL.finditer(text):
        yield m.start(), m.end(), "EMAIL", m.group().lower()


def _ibans(text: str, region: str | None) -> Iterator[Span]:
    from stdnum import iban

    for m in _IBAN.finditer(text):
        raw = m.group()
        # The pattern may run on into a following word in capitals: try the longest valid prefix.
        for end in range(len(raw), 14, -1):
            candidate = raw[:end].rstrip()
            if candidate[-1:].isalnum() and iban.is_valid(candidate):
                yield m.start(), m.start() + len(candidate), "IBAN", iban.compact(candidate)
                break


def _cards(text: str, region: str | None) -> Iterator[Span]:
    from stdnum import luhn

    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
            yield m.start(), m.end(), "CARD", digits


def _phones(text: str, region: str | None) -> Iterator[Span]:
    import phonenumbers

    for match in phonenumbers.PhoneNumberMatcher(text, region.upper() if region else None):
        normal = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        yield match.start, match.end, "PHONE", normal


_DETECTORS: dict[str, Callable[[str, str | None], Iterator[Span]]] = {
    "EMAIL": _emails, "IBAN": _ibans, "CARD": _cards, "PHONE": _phones}


def check_region(region: str | None) -> None:
    if region is None:
        return
    import phonenumbers

    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"redact_region {region!r} is not a region phone numbers know; use a two-letter "
                          "code such as DE, US or GB")


class Redactor:
    """Placeholders for one call: ``redact`` text going out, ``restore`` text coming back."""

    def __init__(self, region: str | None = None) -> None:
        check_region(region)
        self.region = region
        self._placeholders: dict[tuple[str, str], str] = {}  # (kind, normal form) -> placeholder
        self._values: dict[str, str] = {}  # placeholder -> the value as first written
        self._numbers: dict[str, int] = {}

    @property
    def counts(self) -> dict[str, int]:
        """How many distinct values of each kind were replaced (lower-case kinds: ``{"phone": 2}``)."""
        return {kind.lower(): n for kind, n in self._numbers.items()}

    def _spans(self, text: str) -> list[Span]:
        taken: list[Span] = []
        for kind in KINDS:
            for span in _DETECTORS[kind](text, self.region):
                if not any(span[0] < t[1] and t[0] < span[1] for t in taken):
                    taken.append(span)
        return sorted(taken)

    def _placeholder(self, kind: str, normal: str, written: str) -> str:
        key = (kind, normal)
        if key not in self._placeholders:
            self._numbers[kind] = self._numbers.get(kind, 0) + 1
            placeholder = f"<{kind}_{self._numbers[kind]}>"
            self._placeholders[key] = placeholder
            self._values[placeholder] = written
        return self._placeholders[key]

    def redact(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        if not text:
            return text
        out, last = [], 0
        for start, end, kind, normal in self._spans(text):
            out += [text[last:start], self._placeholder(kind, normal, text[start:end])]
            last = end
        return "".join(out) + text[last:] if out else text

    def restore(self, text: str) -> str:
        """``text`` with this call's placeholders replaced by their values (unknown ones left as they are)."""
        if not self._values:
            return text
        return _ECHO.sub(lambda m: self._values.get(f"<{m.group(1)}_{m.group(2)}>", m.group()), text)

    def restore_value(self, value: Any) -> Any:
        """Placeholders put back in every string of a parsed structure (dicts, lists, pydantic models)."""
        if isinstance(value, str):
            return self.restore(value)
        if isinstance(value, list):
            return [self.restore_value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.restore_value(v) for k, v in value.items()}
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            return type(value).model_validate(self.restore_value(dump()))
        return value

    def stream_filter(self) -> StreamRestorer:
        return StreamRestorer(self)


# The start of a placeholder the stream may still be in the middle of: held back until it completes.
_PARTIAL = re.compile(r"[<\[]?(?:E(?:M(?:A(?:I(?:L(?:_\d*)?)?)?)?)?|I(?:B(?:A(?:N(?:_\d*)?)?)?)?|"
                      r"C(?:A(?:R(?:D(?:_\d*)?)?)?)?|P(?:H(?:O(?:N(?:E(?:_\d*)?)?)?)?)?)?$")


class StreamRestorer:
    """Restores placeholders in streamed text, holding back a tail that may be an unfinished placeholder."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.held = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        tail = _PARTIAL.search(text)
        cut = tail.start() if tail and tail.group() else len(text)
        if cut < len(text) and not text[cut:].startswith(("<", "[")) and cut > 0 and text[cut - 1].isalnum():
            cut = len(text)  # "CAP" inside "ESCAPE" is no placeholder
        self.held = text[cut:]
        return self.redactor.restore(text[:cut])

    def flush(self) -> str:
        rest, self.held = self.held, ""
        return self.redactor.restore(rest)
