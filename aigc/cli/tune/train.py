"""``aigc tune local``: fine-tune on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..app import JsonOpt
from .common import DataArg, TemplateOpt, TrainPrinter, refuse_data, settings_now, tune_app


@tune_app.command("local")
def local_cmd(
    data: DataArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write the tuned model to.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model: a local folder, .gguf file or "
                                              "hub id (default: the local backend's, SmolLM2-135M-Instruct).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps (instead of --epochs).")] = None,
    epochs: Annotated[float | None, typer.Option(min=0.01, help="Passes over the data (default: 3, adjusted "
                                                 "to the data's size).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Full fine-tuning instead of LoRA (small models).")] = False,
    learning_rate: Annotated[float | None, typer.Option(min=0, help="Default 1e-3 (LoRA), 5e-5 (full).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per step.")] = 4,
    grad_accum: Annotated[int, typer.Option(min=1, help="Batches per optimizer step.")] = 1,
    max_length: Annotated[int | None, typer.Option(min=8, help="Tokens per example (default 2048).")] = None,
    eval_fraction: Annotated[float, typer.Option(min=0, max=0.49, help="Share of the examples held out to "
                                                 "measure the loss before and after.")] = 0.1,
    save_every: Annotated[int | None, typer.Option(min=1, help="Steps between checkpoints.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the order and the initial adapter.")] = 42,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(min=1, help="LoRA alpha.")] = 32,
    chat_template: TemplateOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the checkpoints of an unfinished run of "
                                          "other data or settings.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    keep_checkpoints: Annotated[bool, typer.Option("--keep-checkpoints", help="Keep the checkpoint folder "
                                                   "after success.")] = False,
    eval_suite: Annotated[Path | None, typer.Option("--eval", help="Afterwards, run this eval suite on the base "
                                                    "and the tuned model (needs aigc eval).")] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Also save the result under this name for "
                                              "--model.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a local model (LoRA by default) into a folder that --backend local loads.

    Interrupted (Ctrl-C, kill -9, a crash), the same command resumes from the last whole checkpoint.

    Example: aigc tune local data.jsonl -o models/my-summarizer --steps 200
    """
    from ...tune import TrainingDataInvalid, local, set_alias

    settings = settings_now()
    printer = TrainPrinter(sys.stderr)
    try:
        result = local(data, output, model=model, steps=steps, epochs=epochs, method="full" if full else "lora",
                       learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                       max_length=max_length, eval_fraction=eval_fraction, save_every=save_every, seed=seed,
                       lora_r=lora_r, lora_alpha=lora_alpha, chat_template=chat_template, device=device,
                       restart=restart, overwrite=overwrite, keep_checkpoints=keep_checkpoints,
                       eval_suite=eval_suite, settings=settings, progress=printer)
    except TrainingDataInvalid as e:
        refuse_data(e)
    finally:
        printer.close()
    if alias:
        set_alias(alias, result.output, data_dir=settings.data_dir, models_file=settings.models_file)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    if result.already_done:
        typer.echo(f"{result.output} is already this run's result (trained {result.created}); nothing to do")
        return
    before = "-" if result.eval_loss_before is None else f"{result.eval_loss_before:.4f}"
    after = "-" if result.eval_loss_after is None else f"{result.eval_loss_after:.4f}"
    resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
    rate = f", {result.tokens_per_s:,.0f} tokens/s" if result.tokens_per_s else ""
    typer.echo(f"tuned {result.base_model} ({result.method}) for {result.steps} steps ({result.epochs:g} epochs) "
               f"on {result.examples_train} examples{resumed}{rate}")
    typer.echo(f"held-out loss: {before} before, {after} after ({result.examples_eval} examples)")
    typer.echo(f"saved: {result.output}")
    typer.echo(f"use it: aigc summarize FILE --backend local --model {alias or result.output}")
