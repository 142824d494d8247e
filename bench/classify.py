"""Sentiment on the local model: aigc's label scoring beside generating the label with raw transformers.

    .venv/bin/python bench/classify.py                 # 24 labelled reviews, CPU
    .venv/bin/python bench/classify.py --n 12 --json

Both sides use the same loaded SmolLM2-135M-Instruct, the same prompt (aigc's sentiment template asking for the
label only) and greedy decoding. aigc (``client.sentiment(text, reason=False)``) scores the three labels as the
model's whole reply, generating nothing; the baseline generates up to 6 tokens and reads a label from them.
Reported: reviews per second, how many answers were not a label of the set, and agreement with the labels
the reviews were written with.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aigc  # noqa: E402

LABELS = ["positive", "negative", "neutral"]
REVIEWS = [
    ("I love this kettle, it boils fast and looks great.", "positive"),
    ("Terrible service, the parcel arrived broken and nobody answered.", "negative"),
    ("The package arrived on Tuesday.", "neutral"),
    ("Best purchase of the year, my kids adore it!", "positive"),
    ("The battery died after two days. Awful.", "negative"),
    ("It is a blue jacket in size M.", "neutral"),
    ("Fantastic quality, I would buy it again.", "positive"),
    ("Do not buy this. It stopped working within a week.", "negative"),
    ("The manual is twelve pages long.", "neutral"),
    ("Wonderful staff and a lovely, quick delivery.", "positive"),
    ("I am very disappointed, the colour is nothing like the photo.", "negative"),
    ("The box contains a lamp and a cable.", "neutral"),
]


def baseline(lm, request, labels) -> str:
    """Raw transformers: generate a few tokens greedily and read the label off them."""
    import torch

    chat = [{"role": m.role, "content": m.content} for m in request.messages]
    ids = lm.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.inference_mode():
        out = lm.model.generate(**ids.to(lm.device), max_new_tokens=6, do_sample=False,
                                pad_token_id=lm.pad_id, eos_token_id=lm.end_ids)
    text = lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip().lower()
    return next((label for label in labels if text.startswith(label)), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=24, help="reviews (the 12 labelled ones, repeated)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reviews = (REVIEWS * (args.n // len(REVIEWS) + 1))[: args.n]
    with aigc.Client(backend="local", temperature=0, ledger=False) as client:
        lm = client.backend._get(None)  # the loaded model, shared by both sides
        client.sentiment("warm up", reason=False)
        started = time.perf_counter()
        ours = [client.sentiment(text, reason=False).text for text, _ in reviews]
        ours_s = time.perf_counter() - started
        requests = [client.build_request("sentiment", {"text": text, "labels": LABELS, "only_label": True,
                                                       "reason": False}, {}) for text, _ in reviews]
        baseline(lm, requests[0], LABELS)
        started = time.perf_counter()
        theirs = [baseline(lm, r, LABELS) for r in requests]
        theirs_s = time.perf_counter() - started
    truth = [label for _, label in reviews]
    figures = {
        "reviews": len(reviews),
        "aigc_per_s": round(len(reviews) / ours_s, 3),
        "generate_per_s": round(len(reviews) / theirs_s, 3),
        "speedup": round(theirs_s / ours_s, 2),
        "aigc_not_a_label": sum(label not in LABELS for label in ours),
        "generate_not_a_label": sum(label not in LABELS for label in theirs),
        "aigc_agreement": round(sum(a == t for a, t in zip(ours, truth, strict=True)) / len(truth), 3),
        "generate_agreement": round(sum(a == t for a, t in zip(theirs, truth, strict=True)) / len(truth), 3),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"sentiment of {figures['reviews']} reviews on {client.model} (CPU)")
    print(f"  aigc, scoring labels:      {figures['aigc_per_s']:.2f} reviews/s, {figures['aigc_not_a_label']} "
          f"not a label, agreement {figures['aigc_agreement']:.0%}")
    print(f"  raw generate, 6 tokens:    {figures['generate_per_s']:.2f} reviews/s, "
          f"{figures['generate_not_a_label']} not a label, agreement {figures['generate_agreement']:.0%}")
    print(f"  ratio (aigc speed / raw):  {figures['speedup']:.2f}x")


if __name__ == "__main__":
    main()
