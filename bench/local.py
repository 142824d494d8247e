"""Local backend throughput and load time, beside raw transformers in the same run.

    .venv/bin/python bench/local.py                       # CPU: float32, batch 1 and 8
    .venv/bin/python bench/local.py --device cuda --dtype bfloat16 --batch-sizes 1,32
    .venv/bin/python bench/local.py --json

Both sides decode greedily with the same model files, dtype, device, prompts and max_new_tokens; tokens/s is
generated tokens (end-of-turn token included, padding excluded) over wall time. "load" converts the built-in
GGUF model into an empty temporary cache, then loads the cached copy again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aigc.backends.local import DEFAULT_MODEL, LocalBackend  # noqa: E402
from aigc.backends.local import models as local_models  # noqa: E402
from aigc.config import load_settings  # noqa: E402
from aigc.types import ChatRequest, Message  # noqa: E402

TOPICS = [
    "Hi",
    "Name three colors.",
    "What is the capital of Italy?",
    "Write a short poem about autumn leaves falling in a quiet park.",
    "Summarize in one sentence: the Industrial Revolution began in Britain in the late 18th century and turned "
    "farming economies into industrial ones, with steam power, textile mills and railways.",
    "Translate to French: the cat is sleeping on the warm windowsill.",
    "Give three tips for learning to program.",
    "Explain to a curious ten-year-old why the sky is blue.",
    "Describe a sunrise over the mountains.",
    "Tell me a joke about computers.",
    "What should I pack for a weekend hike?",
    "List the planets of the solar system.",
]


def prompts(n: int) -> list[str]:
    return [
        t if i < len(TOPICS) else f"{t} (variant {i // len(TOPICS)})"
        for i, t in enumerate(TOPICS * (n // len(TOPICS) + 1))
    ][:n]


def requests(texts: list[str], max_new: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=[Message(role="user", content=t)], model=DEFAULT_MODEL, max_tokens=max_new, temperature=0
        )
        for t in texts
    ]


class Raw:
    """The baseline: transformers' own generate on the same converted model folder."""

    def __init__(self, folder: Path, device: str, dtype) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with local_models.quiet_progress():
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.tokenizer.padding_side = "left"
        self.device = device
        self.eos = self.model.generation_config.eos_token_id
        self.pad = self.model.generation_config.pad_token_id
        if self.pad is None:
            self.pad = self.eos if isinstance(self.eos, int) else self.eos[0]

    def run(self, texts: list[str], batch: int, max_new: int) -> tuple[list[str], int]:
        import torch

        ends = set(self.eos if isinstance(self.eos, list) else [self.eos])
        chats = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
            )
            for t in texts
        ]
        outputs, generated = [], 0
        for start in range(0, len(chats), batch):
            enc = self.tokenizer(
                chats[start : start + batch], padding=True, add_special_tokens=False, return_tensors="pt"
            )
            with torch.inference_mode():
                out = self.model.generate(
                    **enc.to(self.device), max_new_tokens=max_new, do_sample=False, pad_token_id=self.pad
                )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                cut = next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
                generated += cut
                outputs.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return outputs, generated


def run_aigc(backend: LocalBackend, texts: list[str], batch: int, max_new: int) -> tuple[list[str], int]:
    reqs = requests(texts, max_new)
    if batch == 1:
        done = [backend.generate(r) for r in reqs]
    else:
        backend.batch_size = batch
        done = backend.generate_batch(reqs)
    return [c.text for c in done], sum(c.usage.completion_tokens for c in done)


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def measure_load(device: str | None, dtype: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="aigc-bench-") as cache:
        settings = load_settings(
            {"backend": "local", "cache_dir": cache, "device": device, "dtype": dtype}, env={}
        )
        first = LocalBackend(settings)
        _, convert = timed(first.context_window, DEFAULT_MODEL)
        first.close()
        again = LocalBackend(settings)
        _, cached = timed(again.context_window, DEFAULT_MODEL)
        again.close()
    return {
        "first_load_s": round(convert, 2),
        "cached_load_s": round(cached, 2),
        "speedup": round(convert / cached, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    parser.add_argument(
        "--batch-sizes", default=None, help="comma-separated; default 1,8 on CPU and 1,32 on GPU"
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="prompts per batch size (default: twice the batch, at least 8)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each chunk of prompts; the fastest counts"
    )
    parser.add_argument("--cache-dir", default=None, help="converted-model cache for the throughput runs")
    parser.add_argument(
        "--skip-load", action="store_true", help="skip the first-load (GGUF conversion) timing"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    device = local_models.choose_device(args.device)
    dtype = local_models.choose_dtype(device, args.dtype)
    batches = [int(b) for b in (args.batch_sizes or ("1,8" if device == "cpu" else "1,32")).split(",")]
    explicit = {"backend": "local", "device": args.device, "dtype": args.dtype}
    if args.cache_dir:
        explicit["cache_dir"] = args.cache_dir
    settings = load_settings(explicit, env={})

    backend = LocalBackend(settings)
    backend.context_window(DEFAULT_MODEL)  # load (and convert, the first time) outside the timings
    folder = local_models.converted_folder(local_models.resolve_model(DEFAULT_MODEL), settings.cache_dir)
    raw = Raw(folder, device, dtype)
    run_aigc(backend, prompts(1), 1, 8)  # warm up both
    raw.run(prompts(1), 1, 8)

    rows = []
    for batch in batches:
        # Both sides run each chunk of prompts back to back, and each chunk's fastest repeat counts, so load
        # from other processes on the machine falls on both sides alike.
        texts = prompts(args.prompts or max(8, 2 * batch))
        chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        best: dict[str, list[float]] = {
            "raw": [float("inf")] * len(chunks),
            "aigc": [float("inf")] * len(chunks),
        }
        outs: dict[str, list[str]] = {"raw": [], "aigc": []}
        tokens = {"raw": 0, "aigc": 0}
        for rep in range(args.repeat):
            for k, chunk in enumerate(chunks):
                sides = [("raw", raw.run, ()), ("aigc", run_aigc, (backend,))]
                order = sides if (rep + k) % 2 == 0 else sides[::-1]  # alternate who goes first
                for side, fn, args_ in order:
                    (texts_out, n), seconds = timed(fn, *args_, chunk, batch, args.max_new_tokens)
                    best[side][k] = min(best[side][k], seconds)
                    if rep == 0:
                        outs[side] += texts_out
                        tokens[side] += n
        a_tok, r_tok, a_s, r_s = tokens["aigc"], tokens["raw"], sum(best["aigc"]), sum(best["raw"])
        a_out, r_out = outs["aigc"], outs["raw"]
        a_rate, r_rate = a_tok / a_s, r_tok / r_s
        rows.append(
            {
                "batch": batch,
                "prompts": len(texts),
                "aigc_tokens": a_tok,
                "aigc_s": round(a_s, 2),
                "aigc_tok_s": round(a_rate, 1),
                "raw_tokens": r_tok,
                "raw_s": round(r_s, 2),
                "raw_tok_s": round(r_rate, 1),
                "ratio": round(a_rate / r_rate, 3),
                "same_text": a_out == r_out,
            }
        )
    backend.close()
    result = {
        "model": DEFAULT_MODEL,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "max_new_tokens": args.max_new_tokens,
        "repeat": args.repeat,
        "throughput": rows,
        "load": None if args.skip_load else measure_load(args.device, args.dtype),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['model']} on {device} ({result['dtype']}), greedy, max_new_tokens={args.max_new_tokens}, "
        f"fastest of {args.repeat} runs per chunk of prompts"
    )
    print(
        f"{'batch':>5} {'prompts':>7} {'aigc tok/s':>11} {'raw tok/s':>10} {'ratio':>6} {'tokens aigc/raw':>16} {'same text':>9}"
    )
    for r in rows:
        print(
            f"{r['batch']:>5} {r['prompts']:>7} {r['aigc_tok_s']:>11.1f} {r['raw_tok_s']:>10.1f} {r['ratio']:>6.2f} "
            f"{r['aigc_tokens']:>8}/{r['raw_tokens']:<7} {'yes' if r['same_text'] else 'NO':>9}"
        )
    if result["load"]:
        ld = result["load"]
        print(
            f"load: first (GGUF conversion into an empty cache) {ld['first_load_s']:.1f} s, "
            f"cached {ld['cached_load_s']:.2f} s ({ld['speedup']}x faster)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
