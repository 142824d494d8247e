"""Fine-tuning on your own data: locally (the default) or through OpenAI's fine-tuning API.

    import aigc.tune
    report = aigc.tune.validate("data.jsonl")                         # problems by line, tokens, epochs, cost
    result = aigc.tune.local("data.jsonl", "models/my-summarizer")     # SmolLM2 + LoRA, resumable
    job = aigc.tune.hosted("data.jsonl", model="gpt-4o-mini-2024-07-18", suffix="news")
    aigc.tune.set_alias("my-news", job.fine_tuned_model)               # then --model my-news anywhere

The parts: :mod:`.data` (reading and format checks), :mod:`.validate`, :mod:`.build` (training files from
pairs or a batch job), :mod:`.local` with :mod:`.training`, :mod:`.encode`, :mod:`.chat_templates`,
:mod:`.checkpoints`, :mod:`.card` and :mod:`.base`; :mod:`.hosted` with :mod:`.openai_api` and
:mod:`.journal`; :mod:`.aliases`. Importing this package is cheap: torch, transformers, peft and the openai
SDK are imported by the functions that use them. See docs/tune.md.
"""

from __future__ import annotations

from .aliases import apply as apply_alias
from .aliases import list_aliases, remove_alias, resolve, set_alias
from .build import BuildResult, from_job, from_pairs, write_examples
from .hosted import cancel, hosted, list_runs, status
from .local import local
from .types import (
    Alias,
    HostedEvent,
    HostedJob,
    LocalResult,
    Problem,
    TrainingDataInvalid,
    TrainProgress,
    ValidationReport,
)
from .validate import default_epochs, validate

__all__ = [
    "validate", "local", "hosted", "status", "cancel", "list_runs", "default_epochs",
    "from_pairs", "from_job", "write_examples", "BuildResult",
    "set_alias", "remove_alias", "list_aliases", "resolve", "apply_alias",
    "Alias", "HostedEvent", "HostedJob", "LocalResult", "Problem", "TrainProgress", "ValidationReport",
    "TrainingDataInvalid",
]
