"""The training loop of ``aigc tune local``: transformers' ``Trainer`` with PEFT LoRA (or full fine-tuning).

aigc does the parts around the maths: batches padded with a pad token that is not EOS and labels -100 on
padding, checkpoints marked whole (:mod:`.checkpoints`), progress reported through a callback (the library
never prints: the Trainer's own printer and bars are removed), eval loss on the held-out split.
Everything heavy is imported inside the functions.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoints import mark_complete, prune
from .encode import IGNORE, Encoded
from .types import TrainProgress

__all__ = ["TrainConfig", "make_collator", "wrap_model", "build_trainer", "evaluate_loss"]


@dataclass(frozen=True)
class TrainConfig:
    method: str  # "lora" or "full"
    steps: int
    learning_rate: float
    batch_size: int
    grad_accum: int
    save_every: int
    seed: int
    bf16: bool
    use_cpu: bool
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    warmup_steps: int = 0


def make_collator(pad_id: int) -> Callable[[list[dict[str, list[int]]]], dict[str, Any]]:
    """Right-pad a batch: pad ids that are not EOS, attention 0 and label -100 on the padding."""
    import torch

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(x["input_ids"]) for x in batch)
        ids = [x["input_ids"] + [pad_id] * (width - len(x["input_ids"])) for x in batch]
        labels = [x["labels"] + [IGNORE] * (width - len(x["labels"])) for x in batch]
        mask = [[1] * len(x["input_ids"]) + [0] * (width - len(x["input_ids"])) for x in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}

    return collate


def features(encoded: list[Encoded]) -> list[dict[str, list[int]]]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]


def wrap_model(model: Any, config: TrainConfig) -> Any:
    """LoRA adapters on every linear layer of the blocks (PEFT), or the model itself for full fine-tuning."""
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks transformers a question transformers has deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


class _Report:
    """A TrainerCallback (built in :func:`build_trainer`) body: progress, checkpoint markers, token counts."""

    def __init__(self, progress: Callable[[TrainProgress], None] | None) -> None:
        self.progress = progress
        self.loss: float | None = None
        self.started = time.perf_counter()
        self.first_step: int | None = None
        self.tokens_at_start = 0
        self.tokens = 0
        self.last_sent = 0.0

    def tell(self, state: Any, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if not force and now - self.last_sent < 0.25:
            return
        self.last_sent = now
        elapsed = now - self.started
        done = state.global_step - (self.first_step or 0)
        eta = (state.max_steps - state.global_step) * elapsed / done if done > 0 else None
        rate = self.tokens / elapsed if elapsed > 0 and self.tokens else None
        self.progress(TrainProgress(phase="training", step=state.global_step, max_steps=state.max_steps,
                                    loss=self.loss, elapsed_s=round(elapsed, 2),
                                    eta_s=None if eta is None else round(eta, 1),
                                    tokens_per_s=None if rate is None else round(rate, 1)))


def build_trainer(model: Any, train: list[Encoded], config: TrainConfig, run_dir: Path, pad_id: int,
                  progress: Callable[[TrainProgress], None] | None) -> tuple[Any, _Report]:
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    report = _Report(progress)

    class Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            report.started = time.perf_counter()
            report.first_step = state.global_step
            report.tokens_at_start = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            report.tokens = state.num_input_tokens_seen - report.tokens_at_start
            report.tell(state)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                report.loss = float(logs["loss"])
                report.tell(state, force=True)

        def on_save(self, args, state, control, **kw):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, state.global_step)
                prune(Path(args.output_dir))

    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"), max_steps=config.steps, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type="linear", warmup_steps=config.warmup_steps, weight_decay=0.0,
        logging_strategy="steps", logging_steps=max(1, min(10, config.steps // 10)),
        save_strategy="steps", save_steps=config.save_every, save_total_limit=None,
        eval_strategy="no", report_to="none", disable_tqdm=True, log_level="error",
        seed=config.seed, data_seed=config.seed, use_cpu=config.use_cpu, bf16=config.bf16,
        remove_unused_columns=False, dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
        save_only_model=False, max_grad_norm=1.0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=features(train), data_collator=make_collator(pad_id),
                      callbacks=[Callback()])
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    return trainer, report


def evaluate_loss(model: Any, examples: list[Encoded], pad_id: int, batch_size: int) -> float | None:
    """Mean loss per trained token over ``examples`` (None when there are none)."""
    import torch

    if not examples:
        return None
    collate = make_collator(pad_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(examples), batch_size):
                batch = collate(features(examples[start:start + batch_size]))
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                labels = batch["labels"][:, 1:]
                losses = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                    ignore_index=IGNORE, reduction="sum")
                total += float(losses)
                count += int((labels != IGNORE).sum())
    finally:
        model.train(was_training)
    return round(total / count, 6) if count else None


def steps_for(examples: int, batch_size: int, grad_accum: int, epochs: float) -> int:
    return max(1, math.ceil(math.ceil(examples / batch_size) / grad_accum * epochs))
