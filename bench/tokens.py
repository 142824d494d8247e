"""Counting and chunking speed beside raw tiktoken, on the same text in the same run.

    .venv/bin/python bench/tokens.py            # ~10 MB of generated English-like text
    .venv/bin/python bench/tokens.py --json     # the figures as JSON

Each timing is the best of --repeat runs (runs interleaved, so drift hits every contender alike); "x raw"
compares it with the faster of the two raw tiktoken calls (encode_ordinary skips the special-token scan that
encode does). Peak memory is measured in a separate run under tracemalloc: it sees Python objects (token
lists, strings), not tiktoken's internal buffers. Every figure comes with a check that the result is right.

Contenders: raw tiktoken, aigc's count_text, aigc's split sized by the model's encoding (exact packed
counts), split sized by an opaque callable (each chunk counted again to check it), and semantic-text-splitter
alone with the same counter, for scale.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aigc import chunking  # noqa: E402
from aigc.tokens import count_text, get_encoding  # noqa: E402

_VOCABULARY = """
the of and to in a is that for it as was with be by on not he this are or his from at which but have an they
you were her she there one all we their its been has who out more so up said what some can time them about
into only other new would then may these first two like also now over people after any our most years made
where could did many well such way back because even through much still should before those own good long
just very same make how each day world year life here know house state while last work might great since part
place never down between being under both however country take again government without against thing water
river city market report council school doctor question answer morning evening summer winter number system
program research history science music family village north south company policy energy forest island bridge
"""
WORDS = _VOCABULARY.split()


def english_like(n_chars: int, seed: int = 20240607) -> str:
    """Deterministic prose: sentences of common words with commas, numbers and quotes, in paragraphs."""
    rng = random.Random(seed)
    paragraphs, size = [], 0
    while size < n_chars:
        sentences = []
        for _ in range(rng.randint(2, 9)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 28))]
            words[0] = words[0].capitalize()
            for i in range(1, len(words) - 1):
                r = rng.random()
                if r < 0.06:
                    words[i] += ","
                elif r < 0.075:
                    words[i] = str(rng.randint(1, 2025))
                elif r < 0.08:
                    words[i] = f'"{words[i]}"'
            sentences.append(" ".join(words) + rng.choice(".....?!"))
        paragraph = " ".join(sentences) + "\n\n"
        paragraphs.append(paragraph)
        size += len(paragraph)
    return "".join(paragraphs)


def best_time(fn: Callable[[], object], runs: list[float]) -> object:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    runs.append(time.perf_counter() - start)
    return result


def peak_mib(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of the text in MB (default 10)")
    parser.add_argument("--chunk-tokens", type=int, default=2000, help="chunk size for splitting (default 2000)")
    parser.add_argument("--model", default="gpt-4o", help="model whose encoding is used (default gpt-4o)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the best is kept (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    from aigc.models import lookup

    encoding_name = lookup(args.model).encoding or "o200k_base"
    enc = get_encoding(encoding_name)
    text = english_like(int(args.mb * 1_000_000))
    from semantic_text_splitter import TextSplitter

    def raw() -> int:
        return len(enc.encode(text, disallowed_special=()))

    def raw_ordinary() -> int:
        return len(enc.encode_ordinary(text))

    def count() -> int:
        return count_text(text, args.model)

    def split() -> list[str]:
        return chunking.split(text, args.chunk_tokens, model=args.model)

    def split_callable() -> list[str]:
        return chunking.split(text, args.chunk_tokens, counter=lambda s: count_text(s, args.model))

    def splitter_alone() -> list[str]:
        return TextSplitter.from_callback(lambda s: len(enc.encode_ordinary(s)), args.chunk_tokens).chunks(text)

    contenders = {"raw_encode": raw, "raw_encode_ordinary": raw_ordinary, "count_text": count, "split": split,
                  "split_callable": split_callable, "splitter_alone": splitter_alone}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    results: dict[str, object] = {}
    for _ in range(max(1, args.repeat)):
        for name, fn in contenders.items():
            results[name] = best_time(fn, times[name])
    memory = {name: peak_mib(fn) for name, fn in contenders.items()}

    tokens = results["raw_encode"]
    chunks = results["split"]
    sizes = [len(enc.encode_ordinary(c)) for c in chunks]  # type: ignore[union-attr]
    checks = {
        "count_equals_raw": results["count_text"] == tokens == results["raw_encode_ordinary"],
        "chunks_within_limit": max(sizes) <= args.chunk_tokens,
        "callable_counter_same_chunks": results["split_callable"] == chunks,
        "chunks_keep_every_word": " ".join(chunks).split() == text.split(),  # type: ignore[arg-type]
    }
    # The stricter baseline: encode_ordinary skips the special-token scan that encode does.
    base = min(min(times["raw_encode"]), min(times["raw_encode_ordinary"]))
    figures = {
        name: {"seconds": round(min(runs), 4), "vs_raw": round(min(runs) / base, 2), "peak_mib": round(memory[name], 1)}
        for name, runs in times.items()
    }
    report = {
        "text_mb": round(len(text.encode()) / 1e6, 2),
        "tokens": tokens,
        "encoding": encoding_name,
        "chunk_tokens": args.chunk_tokens,
        "chunks": len(chunks),  # type: ignore[arg-type]
        "mean_chunk_tokens": round(sum(sizes) / len(sizes)),
        "repeat": args.repeat,
        "python": platform.python_version(),
        "figures": figures,
        "checks": checks,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"text: {report['text_mb']} MB, {tokens:,} tokens ({encoding_name}); best of {args.repeat} runs")
        labels = {
            "raw_encode": "tiktoken encode(disallowed_special=())",
            "raw_encode_ordinary": "tiktoken encode_ordinary",
            "count_text": "aigc count_text",
            "split": f"aigc split, {args.chunk_tokens}-token chunks",
            "split_callable": "aigc split, counter=callable",
            "splitter_alone": "semantic-text-splitter alone",
        }
        for name, fig in figures.items():
            print(f"  {labels[name]:<42} {fig['seconds']:7.3f} s  {fig['vs_raw']:5.2f}x raw  "
                  f"peak {fig['peak_mib']:7.1f} MiB")
        print(f"  chunks: {report['chunks']}, mean {report['mean_chunk_tokens']} tokens, max {max(sizes)}")
        print("  checks: " + ", ".join(f"{k}={'ok' if v else 'FAILED'}" for k, v in checks.items()))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
