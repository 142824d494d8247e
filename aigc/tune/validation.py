"""``aigc.tune.validate``: check a training file as the hosted service would, and more, before any spend.

For a hosted model (``gpt-4o-mini-2024-07-18``) tokens are counted the way OpenAI bills chat fine-tuning:
each example as a chat request (tiktoken, 3 tokens per message and 3 for the reply primer), cut to the
model's per-example limit, times the epochs. The default epochs follow the service's rule: 3, raised or
lowered so that examples × epochs stays within 100–25,000 (never below 1 or above 25). The cost is those
tokens times the model table's training price.

For a local model (the default) tokens are counted with the model's own tokenizer and chat template,
exactly as training will see them, and an example cut so short that no assistant token is left is an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, Literal

from ..config import Settings, load_settings
from ..models import ModelInfo, ModelTable
from .data import Example, check_file, read_examples, text_of
from .types import Problem, ValidationReport

__all__ = ["validate", "default_epochs", "resolve_target", "FINE_TUNING_CLOSES", "hosted_counts"]

TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MIN_EPOCHS, MAX_EPOCHS = 3, 100, 25_000, 1, 25
# OpenAI reported that no organisation can create new fine-tuning jobs from this day on.
FINE_TUNING_CLOSES = date(2027, 1, 6)
WIND_DOWN = ("OpenAI is winding down self-serve fine-tuning: organisations without recent fine-tuned inference "
             "cannot create jobs since 2026-07-02, and nobody can from 2027-01-06; `aigc tune local` trains on "
             "your machine instead")


def default_epochs(examples: int) -> int:
    """The hosted service's default: 3 epochs, adjusted so examples × epochs lands in 100–25,000."""
    if examples <= 0:
        return TARGET_EPOCHS
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


def resolve_target(model: str | None, table: ModelTable) -> tuple[Literal["local", "openai"], ModelInfo | None]:
    """Whether ``model`` trains here or at OpenAI: a model the table knows as hosted (or an ``ft:`` id) is."""
    if model is None:
        return "local", None
    info = table.lookup(model)
    if info.known and info.backend == "openai":
        return "openai", info
    return "local", None


def hosted_counts(example: Example, info: ModelInfo) -> tuple[int, int]:
    """(tokens billed for the example, tokens of its learned assistant turns), as the service counts them."""
    from ..tokens import REPLY_PRIMER, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, encoding_for

    enc = encoding_for(info)
    total, learned = REPLY_PRIMER, 0
    for m in example.messages:
        text = text_of(m.get("content"))
        n = len(enc.encode_ordinary(text))
        calls = m.get("tool_calls") or m.get("function_call")
        if calls:
            n += len(enc.encode_ordinary(json.dumps(calls, ensure_ascii=False)))
        total += TOKENS_PER_MESSAGE + len(enc.encode_ordinary(m["role"])) + n
        if m.get("name"):
            total += TOKENS_PER_NAME + len(enc.encode_ordinary(str(m["name"])))
        if m["role"] == "assistant" and m.get("weight", 1) == 1:
            learned += n
    return total, learned


def validate(
    data: str | Path,
    *,
    model: str | None = None,
    epochs: int | None = None,
    max_length: int | None = None,
    moderate: bool = False,
    settings: Settings | None = None,
    tokenizer: Any = None,
    chat_template: str | Path | None = None,
    moderation: Callable[[list[str]], list[list[str]]] | None = None,
    today: date | None = None,
    encoded: list[Any] | None = None,
    examples: list[Any] | None = None,
) -> ValidationReport:
    """Check ``data`` for training ``model`` (default: the local default model) and estimate the run.

    Never raises for problems in the file: they are in the report, each with its line. ``moderate=True``
    sends every example through the moderation endpoint (``moderation`` may be injected for tests). A given
    ``tokenizer`` means a local model, already loaded; the examples encoded for it are appended to
    ``encoded`` when given (what training then uses, so the file is read and tokenized once), and those read
    from the file to ``examples`` (what ``--show-labels`` shows).
    """
    settings = settings or load_settings()
    path = Path(data)
    table = ModelTable.cached(settings.models_file)
    target, info = ("local", None) if tokenizer is not None else resolve_target(model, table)
    hosted = target == "openai"
    from .base import DEFAULT_MODEL

    report = ValidationReport(path=str(path), target=target, model=model or DEFAULT_MODEL)
    specials: tuple[str, ...] = ()
    if not hosted:
        tokenizer = tokenizer if tokenizer is not None else _local_tokenizer(model, settings)
        specials = tuple(str(t) for t in tokenizer.all_special_tokens)
    read, problems = read_examples(path, extra_special=specials)
    if examples is not None:
        examples += read
    report.problems = check_file(path, hosted=hosted) + problems
    report.examples = len(read) + len({p.line for p in problems if p.severity == "error" and p.line})
    if hosted:
        assert info is not None
        lengths, learned = _count_hosted(report, read, info, today or date.today())
    else:
        lengths, learned = _count_local(report, read, tokenizer, model, max_length, chat_template,
                                        [] if encoded is None else encoded)
    report.problems.sort(key=lambda p: (p.line is not None, p.line or 0))
    report.usable_examples = len(lengths)
    if lengths:
        report.tokens, report.trained_tokens = sum(lengths), sum(learned)
        report.min_example_tokens, report.max_example_tokens = min(lengths), max(lengths)
        report.mean_example_tokens = round(report.tokens / len(lengths), 1)
    report.epochs_default = epochs is None
    report.epochs = epochs if epochs is not None else default_epochs(len(lengths))
    report.training_tokens = report.tokens * report.epochs
    if hosted:
        assert info is not None
        report.training_price, report.prices_as_of = info.training_price, info.prices_as_of
        report.estimated_cost_usd = info.training_cost(report.training_tokens)
    else:
        report.estimated_cost_usd = 0.0
        report.notes.append("trains on this machine: no per-token cost")
    if moderate:
        _moderate(report, read, moderation or _openai_moderation(settings))
    return report


def _count_hosted(report: ValidationReport, examples: list[Example], info: ModelInfo,
                  today: date) -> tuple[list[int], list[int]]:
    limit = info.training_max_tokens or info.context_window
    report.example_limit = limit
    lengths, learned = [], []
    for example in examples:
        n, trained = hosted_counts(example, info)
        if n > limit:
            report.problems.append(Problem(kind="too-long", severity="warning", line=example.line,
                                           message=f"{n:,} tokens, over the {limit:,}-token limit per example "
                                                   f"of {info.matched}: the end is cut off"))
        lengths.append(min(n, limit))
        learned.append(trained)
    if info.training_price is None:
        report.problems.append(Problem(kind="price", severity="warning",
                                       message=f"the model table has no training price for {info.name}: the "
                                               "cost is unknown (it may not be fine-tunable)"))
    if info.retires is not None and info.retires <= today:
        report.problems.append(Problem(kind="retired", severity="error",
                                       message=f"{info.matched} was shut down on {info.retires}: a model tuned "
                                               "from it could not be used; pick a current snapshot"))
    if today >= FINE_TUNING_CLOSES:
        report.problems.append(Problem(kind="retired", severity="warning", message=WIND_DOWN))
    else:
        report.notes.append(WIND_DOWN)
    return lengths, learned


def _local_tokenizer(model: str | None, settings: Settings) -> Any:
    from .base import check_installed, load_tokenizer, resolve_base

    check_installed()
    return load_tokenizer(resolve_base(model, settings.cache_dir))


def _count_local(report: ValidationReport, examples: list[Example], tokenizer: Any, model: str | None,
                 max_length: int | None, chat_template: str | Path | None,
                 kept: list[Any]) -> tuple[list[int], list[int]]:
    from .chat_templates import training_template
    from .encode import encode_example

    template = training_template(getattr(tokenizer, "chat_template", None), model=report.model,
                                 override=chat_template)
    limit = max_length or default_max_length(tokenizer)
    report.example_limit = limit
    lengths, learned = [], []
    for example in examples:
        encoded, problems = encode_example(tokenizer, template, example, limit)
        report.problems += problems
        if encoded is not None:
            kept.append(encoded)
            lengths.append(len(encoded.input_ids))
            learned.append(encoded.trained)
    return lengths, learned


def default_max_length(tokenizer: Any) -> int:
    """Tokens per training example by default: 2048, or the model's window when that is smaller."""
    window = getattr(tokenizer, "model_max_length", None)
    return min(2048, window) if isinstance(window, int) and window > 0 else 2048


def _openai_moderation(settings: Settings) -> Callable[[list[str]], list[list[str]]]:
    from .openai_api import FineTuningAPI

    return FineTuningAPI.from_settings(settings).moderate


def _moderate(report: ValidationReport, examples: list[Example],
              moderation: Callable[[list[str]], list[list[str]]]) -> None:
    texts = ["\n".join(text_of(m.get("content")) for m in e.messages) for e in examples]
    for start in range(0, len(texts), 32):
        flagged = moderation(texts[start:start + 32])
        for example, categories in zip(examples[start:start + 32], flagged, strict=True):
            if categories:
                report.problems.append(Problem(
                    kind="moderation", severity="error", line=example.line,
                    message=f"flagged by moderation ({', '.join(categories)}); the hosted service refuses "
                            "training files with such content"))
    report.moderated = len(texts)
    report.problems.sort(key=lambda p: (p.line is not None, p.line or 0))
