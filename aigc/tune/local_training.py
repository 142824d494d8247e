"""``aigc.tune.local``: fine-tune a model on this machine, resumable, into a folder every aigc command loads.

    aigc.tune.local("data.jsonl", "models/my-summarizer")      # SmolLM2-135M-Instruct + LoRA, 3 epochs

The run keeps its checkpoints in ``.<name>.tune/`` beside the output folder. Killed at any point, the same
call continues from the newest whole checkpoint and ends at the same step; a call with other data or
settings refuses to mix with them (``restart=True`` starts over). The result is written into a temporary
folder and renamed into place: the LoRA adapter merged into the base weights (fp32 on the CPU, bf16 on a
GPU, never a quantized base), the tokenizer with its chat template and a pad token that is not EOS, the
generation config with the end-of-turn ids, the adapter alone in ``adapter/``, and a model card.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..config import Settings, load_settings
from ..db import utc_stamp
from ..errors import ConfigError, InputError
from ..textio import write_atomic
from .card import read_card, write_card
from .checkpoints import latest_complete, remove_incomplete
from .data import file_sha256
from .types import LocalResult, TrainingDataInvalid, TrainProgress
from .validation import default_epochs, default_max_length, validate

__all__ = ["local", "run_dir_for"]

_DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}


def run_dir_for(output: Path) -> Path:
    """Where a run keeps its checkpoints: a hidden folder beside the output."""
    return output.parent / f".{output.name}.tune"


def local(
    data: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    method: Literal["lora", "full"] = "lora",
    learning_rate: float | None = None,
    batch_size: int = 4,
    grad_accum: int = 1,
    max_length: int | None = None,
    eval_fraction: float = 0.1,
    save_every: int | None = None,
    seed: int = 42,
    lora_r: int = 16,
    lora_alpha: int = 32,
    chat_template: str | Path | None = None,
    device: str | None = None,
    restart: bool = False,
    overwrite: bool = False,
    keep_checkpoints: bool = False,
    eval_suite: str | Path | None = None,
    settings: Settings | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> LocalResult:
    """Fine-tune ``model`` (default: the local backend's) on ``data`` into the folder ``output``."""
    from ..backends.local.models import end_ids
    from . import base as bases
    from .chat_templates import training_template
    from .encode import Encoded

    if method not in _DEFAULT_LR:
        raise ConfigError(f"method must be lora or full, not {method!r}")
    if steps is not None and epochs is not None:
        raise ConfigError("give steps or epochs, not both")
    if not 0 <= eval_fraction < 0.5:
        raise ConfigError("eval_fraction must be at least 0 and below 0.5")
    settings = settings or load_settings()
    if eval_suite is not None:  # a missing suite is the user's first thing to fix, whatever is installed
        from .evals import check_suite

        check_suite(eval_suite)
    bases.check_installed()
    tell = progress or (lambda p: None)
    tell(TrainProgress(phase="loading", note="loading the base model's tokenizer"))
    path, out = Path(data), Path(output).expanduser().resolve()
    base = bases.resolve_base(model, settings.cache_dir)
    tokenizer = bases.load_tokenizer(base)
    max_length = max_length or default_max_length(tokenizer)
    encoded: list[Encoded] = []
    report = validate(path, model=base.name, max_length=max_length, settings=settings, tokenizer=tokenizer,
                      chat_template=chat_template, encoded=encoded)
    if not report.ok:
        raise TrainingDataInvalid(report)
    template = training_template(tokenizer.chat_template, model=base.name, override=chat_template)
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    n_eval = 0 if eval_fraction == 0 else max(1, round(len(encoded) * eval_fraction))
    held = sorted(order[:n_eval])
    eval_set = [encoded[i] for i in held]
    train_set = [encoded[i] for i in sorted(order[n_eval:])]
    from .training import TrainConfig, build_trainer, evaluate_loss, steps_for, wrap_model

    if steps is None:
        epochs = epochs if epochs is not None else default_epochs(len(train_set))
        steps = steps_for(len(train_set), batch_size, grad_accum, epochs)
    epochs = round(steps * batch_size * grad_accum / len(train_set), 3)
    learning_rate = learning_rate or _DEFAULT_LR[method]
    digest = file_sha256(path)
    identity = dict(data=digest, base=base.identity, method=method, steps=steps, lr=learning_rate,
                    batch=batch_size, accum=grad_accum, max_length=max_length, seed=seed, eval=eval_fraction,
                    lora=[lora_r, lora_alpha], template=hashlib.sha256(template.encode()).hexdigest())
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    done = read_card(out) if out.exists() else None
    if done is not None and done.get("fingerprint") == fingerprint and not overwrite:
        return LocalResult(**{**{k: v for k, v in done.items() if k in LocalResult.model_fields}, "already_done": True})
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another -o, or pass --overwrite to replace it")

    from filelock import FileLock, Timeout

    run_dir = run_dir_for(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / "lock"), blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(f"another `aigc tune local` is writing {out}; wait for it to finish") from None
    try:
        state = _run_state(run_dir, fingerprint, restart)
        checkpoints = run_dir / "checkpoints"
        remove_incomplete(checkpoints)
        resume = latest_complete(checkpoints)
        device, dtype = bases.device_and_dtype(device or settings.device)
        tell(TrainProgress(phase="loading", max_steps=steps, note=f"loading {base.name} on {device}"))
        net = bases.load_model(base, dtype)
        ends = end_ids(net, tokenizer)
        pad_id, added = bases.choose_pad(tokenizer, ends)
        if added:
            net.resize_token_embeddings(len(tokenizer))
        net.config.pad_token_id = net.generation_config.pad_token_id = pad_id
        net.generation_config.eos_token_id = ends if len(ends) > 1 else ends[0]
        net.to(device)
        if "eval_loss_before" not in state:
            tell(TrainProgress(phase="evaluating", max_steps=steps, note="held-out loss before training"))
            state["eval_loss_before"] = evaluate_loss(net, eval_set, pad_id, batch_size)
            write_atomic(run_dir / "run.json", json.dumps(state, indent=2))
        config = TrainConfig(method=method, steps=steps, learning_rate=learning_rate, batch_size=batch_size,
                             grad_accum=grad_accum, save_every=save_every or max(1, min(50, steps // 4)),
                             seed=seed, bf16=str(dtype).endswith("bfloat16"), use_cpu=device == "cpu",
                             lora_r=lora_r, lora_alpha=lora_alpha, warmup_steps=min(10, steps // 10))
        net = wrap_model(net, config)
        trainer, counter = build_trainer(net, train_set, config, run_dir, pad_id, progress)
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
        seconds = time.perf_counter() - started
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        tell(TrainProgress(phase="evaluating", step=steps, max_steps=steps, note="held-out loss after training"))
        eval_after = evaluate_loss(net, eval_set, pad_id, batch_size)
        tell(TrainProgress(phase="saving", step=steps, max_steps=steps, note=f"writing {out}"))
        result = LocalResult(
            output=str(out), base_model=base.name, method=method, examples_train=len(train_set),
            examples_eval=len(eval_set), data_sha256=digest, steps=steps, epochs=epochs,
            learning_rate=learning_rate, batch_size=batch_size, max_length=max_length,
            train_loss=round(float(losses[-1]), 6) if losses else None,
            eval_loss_before=state["eval_loss_before"], eval_loss_after=eval_after,
            train_tokens=counter.tokens, train_seconds=round(seconds, 2),
            tokens_per_s=round(counter.tokens / seconds, 1) if counter.tokens and seconds else None,
            resumed_from_step=resume[0] if resume else None, device=device, dtype=str(dtype).split(".")[-1],
            saved_dtype=str(dtype).split(".")[-1], created=utc_stamp(seconds=True))
        card = {**result.model_dump(), "fingerprint": fingerprint, "data_path": str(path.resolve()),
                "base_location": base.location, "identity": identity, "pad_token": tokenizer.pad_token,
                "end_token_ids": ends, "losses": losses}
        _save(net, tokenizer, method, run_dir, out, card, overwrite)
    finally:
        lock.release()
    if not keep_checkpoints:
        shutil.rmtree(run_dir, ignore_errors=True)
    _journal(settings, result, fingerprint, str(path.resolve()))
    if eval_suite is not None:
        from .evals import compare

        result.eval_suite = compare(eval_suite, base=base.name, tuned=str(out), settings=settings)
        write_card(out, {**card, "eval_suite": result.eval_suite})
    tell(TrainProgress(phase="done", step=steps, max_steps=steps, loss=result.train_loss,
                       eval_loss=result.eval_loss_after, elapsed_s=result.train_seconds))
    return result


def _run_state(run_dir: Path, fingerprint: str, restart: bool) -> dict[str, Any]:
    """The run's saved state; refuses checkpoints of a different run unless told to start over."""
    state_file = run_dir / "run.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = None
    if state is not None and (restart or state.get("fingerprint") != fingerprint):
        if not restart:
            raise ConfigError(f"{run_dir} holds checkpoints of a run with other data or settings; run that "
                              "command again to finish it, or pass --restart to discard them")
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        state = None
    if state is None:
        state = {"fingerprint": fingerprint}
        write_atomic(state_file, json.dumps(state, indent=2))
    return state


def _save(net: Any, tokenizer: Any, method: str, run_dir: Path, out: Path, card: dict[str, Any],
          overwrite: bool) -> None:
    """Write the result into a temporary folder, then rename it into place."""
    from .base import quiet

    tmp = run_dir / "result.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet():
        _write(net, tokenizer, method, tmp)
    write_card(tmp, card)
    trash = run_dir / "previous.tmp"
    shutil.rmtree(trash, ignore_errors=True)
    if out.exists():
        if not overwrite:
            raise InputError(f"{out} appeared while training; choose another -o")
        os.replace(out, trash)
    os.replace(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)


def _write(net: Any, tokenizer: Any, method: str, tmp: Path) -> None:
    import torch

    if method == "lora":
        net.save_pretrained(str(tmp / "adapter"))
        dtype = next(p for n, p in net.named_parameters() if "lora_" not in n).dtype
        if dtype not in (torch.float32, torch.bfloat16):
            raise ConfigError(f"the base weights are {dtype}; LoRA adapters are merged only into fp32 or bf16 "
                              "weights (the adapter alone is in the checkpoints)")
        net = net.merge_and_unload()
    net.save_pretrained(str(tmp), safe_serialization=True)
    net.generation_config.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))


def _journal(settings: Settings, result: LocalResult, fingerprint: str, data_path: str) -> None:
    from .journal import Journal

    with Journal(settings.data_dir) as journal:
        job = journal.begin(key=fingerprint, provider="local", where=None, model=result.base_model, suffix=None,
                            data_path=data_path, data_sha256=result.data_sha256, epochs=round(result.epochs),
                            estimated_tokens=result.train_tokens, estimated_cost_usd=0.0, state="running")
        journal.update(job.run_id, state="succeeded", fine_tuned_model=result.output, cost_usd=0.0,
                       trained_tokens=result.train_tokens)
