"""Counting tokens as a compatible server counts them, so that no request is sent that it would refuse.

One :class:`Counting` per model and server, chosen once:

- a model the table counts with tiktoken (``gpt-4o-mini``, or a user's entry): tiktoken, raised by the
  margin the server's reported prompt tokens show, if they ever show one;
- a model whose Hugging Face tokenizer is on this machine (``SmolLM2-135M-Instruct``, a model folder given
  as the model name): that tokenizer, with the model's chat template rendered as the server renders it;
- a server with a tokenize endpoint (vLLM, llama.cpp, llama-cpp-python): the server counts every request;
  documents are split with tiktoken scaled by the ratio the server's counts showed, plus a margin;
- otherwise: tiktoken times a margin (1.25 until the server's answers or errors have shown the real ratio,
  then that ratio plus 5%) and the tokens a chat template adds.

Every answer's ``usage.prompt_tokens`` (and the counts in a context-length error) calibrates the estimate:
the largest ratio seen is kept, in :class:`~.capabilities.Capabilities`, for the next run too.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...tokens import count_messages_with, count_with, get_encoding
from ...types import Message
from .capabilities import Capabilities

__all__ = ["Counting", "choose_counting", "UNKNOWN_SCALE", "UNKNOWN_EXTRA"]

UNKNOWN_SCALE = 1.25  # server tokens per tiktoken token assumed for a tokenizer never measured
UNKNOWN_EXTRA = 32  # tokens a chat template may add (a default system prompt, role markers)
SAFETY = 1.05  # on top of a measured ratio: single parts vary around the average
MIN_SAMPLE = 256  # prompts shorter than this teach the template's overhead, not the ratio
MAX_EXTRA = 512

Save = Callable[[], None]


class Counting:
    """Estimates with tiktoken, scaled by what the server has shown (the fallback, and the base of the others)."""

    kind = "estimate"
    basis = "tiktoken"  # what the learned ratio multiplies

    def __init__(self, encoding: str, caps: Capabilities, save: Save, *, exact: bool = False) -> None:
        """``exact``: tiktoken is this model's own tokenizer (the scale only ever rises above 1)."""
        self.encoding = get_encoding(encoding)
        self.caps = caps
        self.save = save
        self.exact = exact

    # -- the estimate -------------------------------------------------------------------------------
    @property
    def measured(self) -> tuple[float | None, int | None]:
        """The ratio and template share learned for this way of counting (another way's do not apply)."""
        caps = self.caps
        return (caps.scale, caps.extra) if caps.basis in (None, self.basis) else (None, None)

    @property
    def scale(self) -> float:
        measured = self.measured[0]
        if self.exact:
            return 1.0 if measured is None or measured <= 1.0 else measured * SAFETY
        return UNKNOWN_SCALE if measured is None else max(0.5, measured * SAFETY)

    @property
    def extra(self) -> int:
        extra = self.measured[1]
        if extra is not None:
            return extra
        return 0 if self.exact else UNKNOWN_EXTRA

    def base_text(self, text: str) -> int:
        return count_with(self.encoding, text)

    def base_messages(self, messages: list[Message]) -> int:
        return count_messages_with(self.encoding, messages)

    def text(self, text: str) -> int:
        n = self.base_text(text)
        return n if self.scale == 1.0 else math.ceil(n * self.scale)

    def messages(self, messages: list[Message]) -> int:
        n = self.base_messages(messages)
        return (n if self.scale == 1.0 else math.ceil(n * self.scale)) + self.extra

    def splitter(self) -> Any:
        """What chunking counts with: the encoding itself when it is exact (fast, additive), else a function."""
        if self.scale == 1.0:
            return self.encoding
        return self.text

    # -- calibration ---------------------------------------------------------------------------------
    def observe(self, messages: list[Message], server_tokens: int) -> bool:
        """The server counted ``server_tokens`` for these messages: learn the ratio, or the template's share.
        True when that changed what aigc will count."""
        if server_tokens <= 0:
            return False
        base = self.base_messages(messages)
        if base >= MIN_SAMPLE:
            return self.learn_ratio(server_tokens / base)
        return self.learn_extra(server_tokens - math.ceil(base * self.scale))

    def learn_ratio(self, ratio: float) -> bool:
        current, extra = self.measured
        if current is not None and ratio <= current * 1.005:
            return False
        if self.exact and ratio <= 1.0 and current is None:
            return False  # the table's tokenizer is right: nothing to learn
        self.caps.scale, self.caps.extra, self.caps.basis = round(ratio, 4), extra, self.basis
        self.save()
        return True

    def learn_extra(self, residual: int) -> bool:
        current, extra = self.measured
        residual = min(MAX_EXTRA, max(0, residual))
        if residual <= (extra if extra is not None else (0 if self.exact else -1)):
            return False
        self.caps.scale, self.caps.extra, self.caps.basis = current, residual, self.basis
        self.save()
        return True


class HFCounting(Counting):
    """The model's own Hugging Face tokenizer, its chat template rendered as transformers renders it."""

    kind = "tokenizer"
    basis = "tokenizer"

    def __init__(self, tokenizer: Any, template: Any, special: dict[str, str], caps: Capabilities,
                 save: Save) -> None:
        super().__init__("o200k_base", caps, save, exact=True)
        self.tokenizer = tokenizer
        self.template = template
        self.special = special

    def base_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def base_messages(self, messages: list[Message]) -> int:
        plain = [{"role": m.role, "content": m.content} for m in messages]
        if self.template is not None:
            try:
                rendered = self.template.render(messages=plain, add_generation_prompt=True, **self.special)
                return len(self.tokenizer.encode(rendered, add_special_tokens=False))
            except Exception:  # a template this renderer cannot run: count the parts instead
                pass
        return sum(self.base_text(m["content"]) + 8 for m in plain) + UNKNOWN_EXTRA

    def splitter(self) -> Any:
        return self.tokenizer if self.scale == 1.0 else self.text


class ServerCounting(Counting):
    """The server's tokenize endpoint counts every request; documents are split with scaled tiktoken."""

    kind = "server"

    def __init__(self, probe: Any, flavour: str, model: str, caps: Capabilities, save: Save) -> None:
        super().__init__("o200k_base", caps, save)
        self.probe, self.flavour, self.model = probe, flavour, model

    def text(self, text: str) -> int:
        counted = self.probe.count_text(self.flavour, self.model, text) if text else 0
        if counted is None:
            return super().text(text)
        base = self.base_text(text)
        if base >= MIN_SAMPLE:
            self.learn_ratio(counted / base)
        return counted

    def messages(self, messages: list[Message]) -> int:
        plain = [m.model_dump(exclude_none=True) for m in messages]
        counted = self.probe.count_messages(self.flavour, self.model, plain)
        if counted is None:  # no template endpoint: the contents by the server, the framing estimated
            parts = [self.probe.count_text(self.flavour, self.model, m.content) for m in messages]
            if any(p is None for p in parts):
                return super().messages(messages)
            counted = sum(parts) + 8 * len(messages) + self.extra
        self.observe(messages, counted)
        return counted

    def splitter(self) -> Any:
        return super().text  # scaled tiktoken: fast, and calibrated by the exact counts above


def choose_counting(info: Any, model: str, caps: Capabilities, save: Save, *, cache_dir: Path | None,
                    probe: Any | None) -> Counting:
    """The best way to count ``model``'s tokens on this server (see the module docstring)."""
    if info.encoding is not None and info.known and info.backend != "local":
        return Counting(info.encoding, caps, save, exact=True)
    found = find_tokenizer(info, model, cache_dir)
    if found is not None:
        return HFCounting(*found, caps, save)
    if probe is not None:
        if caps.tokenizer is None:
            caps.tokenizer = probe.tokenizer_kind(model)
            save()
        if caps.tokenizer != "none":
            return ServerCounting(probe, caps.tokenizer, model, caps, save)
    return Counting(info.encoding or "o200k_base", caps, save)


# -- Hugging Face tokenizers on this machine ------------------------------------------------------------


def find_tokenizer(info: Any, model: str, cache_dir: Path | None) -> tuple[Any, Any, dict[str, str]] | None:
    """(tokenizer, chat template, special tokens) from a folder on this machine, or None.

    Looked for: the model name itself as a folder (``transformers serve`` takes paths), aigc's converted copy
    of a built-in local model under ``<cache_dir>/models``, and the Hugging Face cache (offline).
    """
    folders: list[Path] = []
    path = Path(model).expanduser()
    if len(model) < 4096 and path.is_dir():
        folders.append(path)
    if cache_dir is not None and info.known and info.matched:
        folders.append(Path(cache_dir) / "models" / info.matched)
    for folder in folders:
        if (folder / "tokenizer.json").is_file():
            return _load(folder / "tokenizer.json", folder)
    if info.tokenizer:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        cached = try_to_load_from_cache(info.tokenizer, "tokenizer.json")
        if isinstance(cached, str):
            return _load(Path(cached), Path(cached).parent)
    return None


def folder_window(model: str) -> tuple[int, str] | None:
    """The window a model folder's ``config.json`` declares (``max_position_embeddings``), when the model name
    is a folder on this machine (``transformers serve`` and vLLM take paths); None otherwise."""
    path = Path(model).expanduser()
    if len(model) >= 4096 or not (path / "config.json").is_file():
        return None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return (value, "config.json") if isinstance(value, int) and value > 0 else None


def _load(tokenizer_file: Path, folder: Path) -> tuple[Any, Any, dict[str, str]] | None:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception:
        return None
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: the default one
        source = next((t.get("template") for t in source if isinstance(t, dict) and t.get("name") == "default"),
                      None)
    if not isinstance(source, str) and (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    special = {}
    for name in ("bos_token", "eos_token"):
        value = config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            special[name] = value
    return tokenizer, _compile(source) if isinstance(source, str) else None, special


def _compile(source: str) -> Any:
    """A chat template compiled the way transformers compiles it (sandboxed, trimmed blocks)."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return None

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except Exception:
        return None

