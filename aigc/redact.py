"""Secrets kept out of everything aigc writes or prints: API keys, and credentials inside URLs.

A ``base_url`` may carry a secret (``https://user:pass@host/v1``, ``...?api-key=...``). Wherever a URL is
shown — error messages, ``aigc doctor``, reports, logs — it goes through :func:`redact_url`, and error
text goes through :func:`scrub` with every secret of the configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

__all__ = ["redact_url", "url_secrets", "scrub"]

MASK = "***"
_KEYLIKE = re.compile(r"\b(sk|rk)-[A-Za-z0-9_\-*]{6,}")
# Query parameters whose values are secrets (api-key, access_token, sig, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|code", re.I)
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def _split(url: str):
    try:
        return urlsplit(url)
    except ValueError:  # not a URL at all: nothing to take apart
        return None


def url_secrets(url: str | None) -> list[str]:
    """The secrets a URL carries: its password and the values of secret-looking query parameters (a user
    name is hidden wherever it appears in a URL, see :func:`scrub`)."""
    parts = _split(url) if url else None
    if parts is None:
        return []
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=False) if _SECRET_PARAM.search(k) and v]
    return found


def redact_url(url: str | None) -> str | None:
    """``url`` with its user info and secret query values replaced by ``***``."""
    if not url:
        return url
    parts = _split(url)
    if parts is None:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{piece.split('=', 1)[0]}={MASK}" if "=" in piece and _SECRET_PARAM.search(unquote(piece.split("=", 1)[0]))
        else piece for piece in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, secrets: str | Iterable[str | None] | None) -> str:
    """``text`` without any of ``secrets`` (as given, or percent-encoded), the user info of any URL in it,
    or anything shaped like a key."""
    if isinstance(secrets, str):
        secrets = [secrets]
    for secret in sorted({s for s in secrets or () if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), unquote(secret)}:
            if len(form) >= 3:
                text = text.replace(form, MASK)
    return _KEYLIKE.sub(r"\1-" + MASK, _USERINFO.sub(MASK + "@", text))
