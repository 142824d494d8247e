"""Fine-tuning on your own data: locally (the default) or through OpenAI's fine-tuning API.

    import aigc.tune
    report = aigc.tune.validate("data.jsonl")                         # problems by line, tokens, epochs, cost
    result = aigc.tune.local("data.jsonl", "models/my-summarizer")     # SmolLM2 + LoRA, resumable
    job = aigc.tune.hosted("data.jsonl", model="gpt-4o-mini-2024-07-18", suffix="news")
    aigc.tune.set_alias("my-news", job.fine_tuned_model)               # then --model my-news anywhere

The parts: :mod:`.data` (reading and format checks), :mod:`.validation`, :mod:`.build` (training files from
pairs or a batch job), :mod:`.local_training` with :mod:`.training`, :mod:`.encode`, :mod:`.chat_templates`,
:mod:`.checkpoints`, :mod:`.card` and :mod:`.base`; :mod:`.hosted_jobs` with :mod:`.openai_api` and
:mod:`.journal`; :mod:`.aliases`. Importing this package is cheap: torch, transformers, peft and the openai
SDK are imported by the functions that use them. See docs/tune.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

STORE_FILE = "tune.db"  # in the user data dir: the journal of runs and the aliases (see .store)


def store_path(data_dir: Path | str) -> Path:
    """Where the journal of runs and the aliases live (cheap: the client asks on every construction)."""
    return Path(data_dir) / STORE_FILE


# name -> the module that defines it; loaded on first use, so importing aigc.tune (and aigc.tune.aliases,
# which the client uses on every construction) stays cheap.
_LAZY = {
    "validate": "validation", "default_epochs": "validation", "local": "local_training",
    "hosted": "hosted_jobs", "status": "hosted_jobs", "cancel": "hosted_jobs", "list_runs": "hosted_jobs",
    "from_pairs": "build", "from_job": "build", "write_examples": "build", "BuildResult": "build",
    "set_alias": "aliases", "remove_alias": "aliases", "list_aliases": "aliases", "resolve": "aliases",
    "apply_alias": "aliases",
    "Alias": "types", "HostedEvent": "types", "HostedJob": "types", "LocalResult": "types", "Problem": "types",
    "TrainProgress": "types", "ValidationReport": "types", "TrainingDataInvalid": "types",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aigc.tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), "apply" if name == "apply_alias" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
