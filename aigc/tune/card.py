"""The model card of a local fine-tune: ``aigc-tune.json`` (read by aigc) and ``README.md`` (read by people).

It says what the folder is: the base model, the data's SHA-256, the method and settings, steps, losses
before and after, the date, and the eval suite's paired result when one ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..textio import write_atomic

__all__ = ["write_card", "read_card", "CARD_FILE"]

CARD_FILE = "aigc-tune.json"


def read_card(folder: Path | str) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_card(folder: Path, card: dict[str, Any]) -> None:
    write_atomic(folder / CARD_FILE, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "---",
        f"base_model: {card['base_model']}",
        "library_name: transformers",
        "tags: [aigc, fine-tuned, " + ("lora" if card["method"] == "lora" else "full-fine-tune") + "]",
        "---",
        "",
        f"# {Path(card['output']).name}",
        "",
        f"Fine-tuned from **{card['base_model']}** with `aigc tune local` on {card['created'][:10]}"
        + (" (LoRA, merged into the base weights)." if card["method"] == "lora" else " (full fine-tuning)."),
        "",
        "| | |",
        "| --- | --- |",
        f"| data | `{card['data_path']}` (sha256 `{card['data_sha256'][:16]}…`) |",
        f"| examples | {card['examples_train']} train, {card['examples_eval']} held out |",
        f"| steps | {card['steps']} ({card['epochs']:g} epochs, batch {card['batch_size']}, "
        f"learning rate {card['learning_rate']:g}, max length {card['max_length']}) |",
        f"| training loss | {_loss(card.get('train_loss'))} |",
        f"| held-out loss | {_loss(card.get('eval_loss_before'))} before → {_loss(card.get('eval_loss_after'))} after |",
        f"| device | {card['device']} ({card['dtype']}); saved as {card['saved_dtype']} |",
    ]
    if card.get("resumed_from_step"):
        lines.append(f"| resumed | from the checkpoint at step {card['resumed_from_step']} |")
    if card.get("eval_suite"):
        lines.append(f"| eval suite | `{card['eval_suite'].get('suite', '')}`: see aigc-tune.json |")
    lines += ["", "Use it: `aigc summarize article.txt --backend local --model " + card["output"] + "`", ""]
    write_atomic(folder / "README.md", "\n".join(lines))
