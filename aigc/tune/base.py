"""The base model of a local fine-tune: found, converted and loaded the way the local backend does it.

This module is the one place tune touches :mod:`aigc.backends.local.models`; torch, transformers and peft
are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.local import models as local_models
from ..errors import BackendUnavailable

__all__ = ["Base", "resolve_base", "check_installed", "load_tokenizer", "load_model", "choose_pad",
           "quiet", "INSTALL_HINT", "DEFAULT_MODEL"]

INSTALL_HINT = "pip install 'aigc-toolkit[tune]'"
DEFAULT_MODEL = local_models.DEFAULT_MODEL
# Tokens made for padding, in the order they are preferred; the unknown token comes after them.
_PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|fim_pad|>", "<pad>", "<|pad|>", "[PAD]", "<|padding|>")


@dataclass(frozen=True)
class Base:
    """A base model ready to load: its name, the folder (or hub id) transformers reads, and its identity."""

    name: str
    location: str
    identity: str  # changes when the weights do: part of a run's fingerprint


def check_installed() -> None:
    missing = [m for m in ("torch", "transformers", "peft", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(f"local fine-tuning needs {', '.join(missing)}; install it with: {INSTALL_HINT}")


def resolve_base(model: str | None, cache_dir: Path) -> Base:
    """The base model named ``model`` (default: the local backend's), converting a GGUF file once."""
    spec = local_models.resolve_model(model or DEFAULT_MODEL)
    if spec.kind == "gguf":
        folder = local_models.ensure_converted(spec, cache_dir)
        source = (folder / "aigc-source.json").read_text(encoding="utf-8")
        return Base(spec.name, str(folder), hashlib.sha256(source.encode()).hexdigest()[:16])
    if spec.kind == "folder":
        folder = Path(spec.location).resolve()
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]
        return Base(spec.name, str(folder), hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16])
    return Base(spec.name, spec.location, spec.location)


quiet = local_models.quiet_progress  # keeps transformers' own progress bars off stderr (the library never prints)


def load_tokenizer(base: Base) -> Any:
    from transformers import AutoTokenizer

    with local_models.quiet_progress():
        return AutoTokenizer.from_pretrained(base.location)


def load_model(base: Base, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    with local_models.quiet_progress():
        return AutoModelForCausalLM.from_pretrained(base.location, dtype=dtype)


def device_and_dtype(requested_device: str | None) -> tuple[str, Any]:
    """CUDA with bf16 when the GPU has it (fp32 otherwise), else the CPU in fp32."""
    import torch

    device = local_models.choose_device(requested_device)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, torch.float32


def choose_pad(tokenizer: Any, ends: list[int]) -> tuple[int, bool]:
    """A pad token distinct from every end token (pad = EOS would mask EOS, and the model would never learn
    to stop). Returns (id, whether a new token had to be added)."""
    vocab = tokenizer.get_vocab()
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in ends:
        return int(pad), False
    for token in (*_PAD_CANDIDATES, tokenizer.unk_token):
        if token and token in vocab and vocab[token] not in ends and vocab[token] != tokenizer.bos_token_id:
            tokenizer.pad_token = token
            return int(vocab[token]), False
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return int(tokenizer.pad_token_id), True
