"""What aigc knows about each model: limits, tokenizer and prices.

The table ships as ``aigc/data/models.toml``; a user file of the same shape is merged over it
(``ModelTable.load(path)``). ``lookup(name)`` answers for any name:

1. the exact name, or an alias, ignoring case;
2. a dated snapshot (``gpt-4o-mini-2024-07-18``, ``gpt-3.5-turbo-0125``): the longest known name that the
   snapshot date extends. Only a date may follow, so ``o3-mini-2025-01-31`` never borrows the prices of ``o3``;
3. a fine-tuned model (``ft:gpt-4o-mini-2024-07-18:org:suffix:id``): its base model's entry, priced at the
   base's fine-tuned prices (unknown, never the base's own prices, when the table has none);
4. anything else: ``known=False`` with a conservative 8192-token window, o200k_base counting and no prices,
   so its cost is reported as unknown rather than as 0.
"""

from __future__ import annotations

import math
import re
import tomllib
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tiktoken
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, InputError
from .types import Usage

__all__ = ["ModelInfo", "ModelTable", "lookup", "UNKNOWN_CONTEXT_WINDOW", "UNKNOWN_MAX_OUTPUT_TOKENS"]

UNKNOWN_CONTEXT_WINDOW = 8192
UNKNOWN_MAX_OUTPUT_TOKENS = 4096
DEFAULT_ENCODING = "o200k_base"

_PRICE_KEYS = ("input_price", "output_price", "cached_input_price", "batch_input_price", "batch_output_price",
               "training_price", "fine_tuned_input_price", "fine_tuned_cached_input_price",
               "fine_tuned_output_price")
# -2024-07-18 or -0125 at the end of a name: a snapshot of the model named before it.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


class ModelInfo(BaseModel):
    """One model's limits, tokenizer and prices (USD per 1M tokens; None where not known)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    known: bool = True
    matched: str | None = Field(None, description="the table entry that answered, None for an unknown model")
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    max_input_tokens: int | None = Field(None, gt=0)
    encoding: str | None = DEFAULT_ENCODING
    tokenizer: str | None = None
    input_price: float | None = Field(None, ge=0)
    output_price: float | None = Field(None, ge=0)
    cached_input_price: float | None = Field(None, ge=0)
    batch_input_price: float | None = Field(None, ge=0)
    batch_output_price: float | None = Field(None, ge=0)
    prices_as_of: date | None = None
    training_price: float | None = Field(None, ge=0, description="USD per 1M tokens trained by a fine-tuning job")
    training_max_tokens: int | None = Field(None, gt=0, description="the most tokens of one training example")
    fine_tuned_input_price: float | None = Field(None, ge=0)
    fine_tuned_cached_input_price: float | None = Field(None, ge=0)
    fine_tuned_output_price: float | None = Field(None, ge=0)
    retires: date | None = Field(None, description="the day the provider shuts the model (and its fine-tunes) down")
    backend: Literal["openai", "local"] = "openai"
    reasoning: bool = False
    aliases: tuple[str, ...] = ()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None and value not in tiktoken.list_encoding_names():
            raise ValueError(f"unknown tiktoken encoding {value!r}; use one of {', '.join(tiktoken.list_encoding_names())}")
        return value

    @model_validator(mode="after")
    def _limits_fit(self) -> ModelInfo:
        if self.max_output_tokens > self.context_window:
            raise ValueError(f"max_output_tokens ({self.max_output_tokens}) exceeds context_window ({self.context_window})")
        if self.max_input_tokens is not None and self.max_input_tokens > self.context_window:
            raise ValueError(f"max_input_tokens ({self.max_input_tokens}) exceeds context_window ({self.context_window})")
        return self

    def max_prompt_tokens(self, reply_tokens: int = 0) -> int:
        """The most prompt tokens a request may have when ``reply_tokens`` are kept for the reply."""
        room = self.context_window - reply_tokens
        return room if self.max_input_tokens is None else min(room, self.max_input_tokens)

    @property
    def priced(self) -> bool:
        return self.input_price is not None and self.output_price is not None

    def training_cost(self, trained_tokens: int) -> float | None:
        """USD for a fine-tuning job that trains on ``trained_tokens`` (None: no training price known)."""
        return None if self.training_price is None else round(trained_tokens * self.training_price / 1_000_000, 6)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0,
                      batch: bool = False) -> float | None:
        """USD for one request, or None when the prices are not known.

        ``cached_tokens`` is the part of ``prompt_tokens`` served from the prompt cache (the API reports it in
        ``prompt_tokens_details.cached_tokens``); without a cached price it costs the full input price.
        ``batch=True`` uses the Batch API prices; a cache discount on batches is not modelled, so that estimate
        errs high.
        """
        if min(prompt_tokens, completion_tokens, cached_tokens) < 0:
            raise InputError("token counts cannot be negative")
        if cached_tokens > prompt_tokens:
            raise InputError(f"cached_tokens ({cached_tokens}) cannot exceed prompt_tokens ({prompt_tokens})")
        if batch:
            if self.batch_input_price is None or self.batch_output_price is None:
                return None
            parts = [prompt_tokens * self.batch_input_price, completion_tokens * self.batch_output_price]
        else:
            if not self.priced:
                return None
            cached_price = self.input_price if self.cached_input_price is None else self.cached_input_price
            parts = [(prompt_tokens - cached_tokens) * self.input_price, cached_tokens * cached_price,
                     completion_tokens * self.output_price]
        return math.fsum(parts) / 1_000_000

    def cost(self, usage: Usage, *, batch: bool = False) -> float | None:
        """USD for the tokens in ``usage``, or None when the prices are not known."""
        return self.estimate_cost(usage.prompt_tokens, usage.completion_tokens, batch=batch)


class ModelTable:
    """The shipped model table, with a user's file merged over it."""

    def __init__(self, entries: dict[str, ModelInfo], sources: tuple[str, ...] = ()) -> None:
        self._entries = dict(entries)
        self.sources = sources
        self._index: dict[str, str] = {}
        for name, info in self._entries.items():
            for key in (name, *info.aliases):
                self._index.setdefault(key.lower(), name)
        self._memo: dict[str, ModelInfo] = {}

    @classmethod
    def cached(cls, user_file: Path | None = None) -> ModelTable:
        """:meth:`load`, parsed once per process and again only when the user file changes."""
        key: tuple = (None,)
        if user_file is not None:
            path = Path(user_file).expanduser()
            try:
                stat = path.stat()
            except OSError:
                return cls.load(user_file)  # reports the problem
            key = (str(path), stat.st_mtime_ns, stat.st_size)
        table = _loaded.get(key)
        if table is None:
            table = _loaded[key] = cls.load(user_file)
        return table

    @classmethod
    def load(cls, user_file: Path | None = None) -> ModelTable:
        """The shipped table, with ``user_file`` (TOML, same shape) merged over it.

        Raises ConfigError naming the file and the key when either file is unreadable or invalid.
        """
        shipped = resources.files("aigc").joinpath("data", "models.toml")
        raw = _parse(shipped.read_text(encoding="utf-8"), "aigc/data/models.toml")
        sources = ["aigc/data/models.toml"]
        if user_file is not None:
            path = Path(user_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ConfigError(f"models file {path} does not exist; create it or unset models_file") from None
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"cannot read models file {path}: {e}") from None
            user = _parse(text, str(path))
            for name, fields in user.items():
                merged = {**raw.get(name, {}), **fields}
                if any(k in fields for k in _PRICE_KEYS) and "prices_as_of" not in fields:
                    merged.pop("prices_as_of", None)  # the shipped date does not describe the user's prices
                raw[name] = merged
            sources.append(str(path))
            where = {name: str(path) if name in user else "aigc/data/models.toml" for name in raw}
        else:
            where = dict.fromkeys(raw, "aigc/data/models.toml")
        entries = {name: _entry(name, fields, where[name]) for name, fields in raw.items()}
        return cls(entries, tuple(sources))

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.lookup(name).known

    def names(self) -> list[str]:
        return list(self._entries)

    def lookup(self, name: str) -> ModelInfo:
        """What is known about ``name``; see the module docstring for the fallback rule."""
        info = self._memo.get(name)
        if info is None:
            info = self._resolve(name)
            if len(self._memo) < 1024:
                self._memo[name] = info
        return info

    def _resolve(self, name: str) -> ModelInfo:
        key = name.strip().lower()
        if key.startswith("ft:") and key.count(":") >= 2:
            return self._fine_tuned(name, name.strip().split(":")[1])
        entry = self._index.get(key)
        if entry is None:
            base = key
            while (m := _SNAPSHOT.search(base)) and entry is None:
                base = base[: m.start()]
                entry = self._index.get(base)
        if entry is None:
            return ModelInfo(name=name, known=False, context_window=UNKNOWN_CONTEXT_WINDOW,
                             max_output_tokens=UNKNOWN_MAX_OUTPUT_TOKENS, encoding=DEFAULT_ENCODING)
        return self._entries[entry].model_copy(update={"name": name, "matched": entry})


    def _fine_tuned(self, name: str, base: str) -> ModelInfo:
        """A fine-tuned model: its base's limits, at the base's fine-tuned prices (None where unknown)."""
        info = self._resolve(base)
        if not info.known:
            return info.model_copy(update={"name": name})
        return info.model_copy(update={
            "name": name, "input_price": info.fine_tuned_input_price, "output_price": info.fine_tuned_output_price,
            "cached_input_price": info.fine_tuned_cached_input_price, "batch_input_price": None,
            "batch_output_price": None,
        })


_loaded: dict[tuple, ModelTable] = {}


def _shipped() -> ModelTable:
    return ModelTable.cached(None)


def lookup(name: str) -> ModelInfo:
    """``name`` in the shipped table (use ``ModelTable.load(user_file).lookup`` to include a user's file)."""
    return _shipped().lookup(name)


def _parse(text: str, source: str) -> dict[str, dict[str, Any]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    unknown = set(doc) - {"models"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}; models go in [models.\"name\"] tables")
    models = doc.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: 'models' must be a table of [models.\"name\"] tables")
    for name, fields in models.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{source}: models.{_quote(name)} must be a table of keys")
    return {name: dict(fields) for name, fields in models.items()}


def _entry(name: str, fields: dict[str, Any], source: str) -> ModelInfo:
    data = dict(fields)
    if "tokenizer" in data and "encoding" not in data:
        data["encoding"] = None  # counted by its own tokenizer
    for key, value in fields.items():
        if key in ("name", "known", "matched") or key not in ModelInfo.model_fields:
            hint = ""
            if isinstance(value, dict):  # [models.gpt-4.1] reads as models -> "gpt-4" -> "1"
                hint = f' (a name with a dot needs quotes: [models."{name}.{key}"])'
            raise ConfigError(f"{source}: models.{_quote(name)}.{key}: unknown key{hint}")
    try:
        return ModelInfo(name=name, matched=name, **data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        key = f"models.{_quote(name)}" + (f".{loc}" if loc else "")
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required for a model the shipped table does not have"
        raise ConfigError(f"{source}: {key}: {msg}") from None


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'
