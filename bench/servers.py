"""Check aigc against a running OpenAI-compatible server: what works, what degrades and how.

Start a server (commands in docs/servers.md), then:

    .venv/bin/python bench/servers.py --base-url http://127.0.0.1:8080/v1 --model smollm2 [--name llama.cpp]

It runs, through aigc, the four tasks plain and streamed, structured output (a pydantic schema), a 21 KB
document (longer than a small server's window), a wrong model name, and ``aigc doctor``'s probe, counting
every HTTP status the server sent. It prints one line per check and, with ``--json``, the figures.
Nothing here is third-party code: the servers are the projects' own, installed and started separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import openai  # noqa: E402
import pydantic  # noqa: E402

import aigc  # noqa: E402
from aigc.backends.openai import OpenAIBackend  # noqa: E402
from aigc.backends.openai.discovery import check_server  # noqa: E402
from aigc.config import load_settings  # noqa: E402

TEXT = ("The town council approved a plan on Tuesday to convert the old tram depot into a public library, "
        "with construction due to start next spring and a budget of 4.5 million euros.")
WORDS = ["river", "bridge", "council", "harbour", "festival", "library", "museum", "tram", "market", "school"]
LONG = "\n\n".join(f"Paragraph {p}. " + " ".join(WORDS[(p + i) % len(WORDS)] for i in range(60)).capitalize() + "."
                   for p in range(45))  # ~21 KB, ~4,000 tiktoken tokens


class Capital(pydantic.BaseModel):
    country: str
    capital: str


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="server")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--max-output-tokens", type=int, default=64, help="cap per answer (CPU servers are slow)")
    parser.add_argument("--only", help="comma-separated checks to run (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    statuses: Counter[int] = Counter()

    def count(response: Any) -> None:
        statuses[response.status_code] += 1

    http = openai.DefaultHttpxClient(event_hooks={"response": [count]})
    settings = load_settings({"base_url": args.base_url, "model": args.model, "api_key": args.api_key,
                              "timeout": args.timeout, "deadline": 10 * args.timeout, "ledger": False,
                              "max_output_tokens": args.max_output_tokens})
    sdk = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=args.timeout,
                        http_client=http)
    backend = OpenAIBackend(settings, client=sdk)
    report: dict[str, Any] = {"server": args.name, "model": args.model}

    only = set(args.only.split(",")) if args.only else None

    def check(name: str, fn) -> None:
        if only is not None and name not in only:
            return
        before = statuses.copy()
        started = time.perf_counter()
        try:
            detail = fn()
            outcome = "ok"
        except aigc.AigcError as e:
            outcome, detail = type(e).__name__, str(e)
        sent = {k: v - before.get(k, 0) for k, v in statuses.items() if v - before.get(k, 0)}
        report[name] = {"outcome": outcome, "detail": detail, "http": sent,
                        "seconds": round(time.perf_counter() - started, 1)}
        print(f"{args.name:<14} {name:<12} {outcome:<22} http {sent} {time.perf_counter() - started:6.1f}s  "
              f"{str(detail)[:140]}", flush=True)

    check("doctor", lambda: check_server(args.base_url, args.api_key)[2])
    with aigc.Client(backend=backend, settings=settings) as client:
        check("window", lambda: f"{client.context_window()} tokens "
                                f"({backend.capabilities(args.model).window_source or 'model table'})")
        check("summarize", lambda: client.summarize(TEXT, length="1 sentence").text)
        check("translate", lambda: client.translate(TEXT, to="French").text)
        check("answer", lambda: client.answer("What will the depot become?", context=TEXT).text)
        check("news", lambda: client.news(TEXT, length="60 words").text)

        def streamed() -> str:
            stream = client.summarize(TEXT, stream=True)
            text = "".join(stream)
            assert text == stream.result.text
            return f"{len(text)} chars; usage {stream.result.usage.prompt_tokens}+" \
                   f"{stream.result.usage.completion_tokens}{' (estimated)' if any('usage' in w for w in stream.result.warnings) else ''}"

        check("stream", streamed)

        def structured() -> str:  # room for the JSON: a small model pads it with whitespace
            result = client.answer("What is the capital of France?", schema=Capital,
                                   max_output_tokens=max(args.max_output_tokens, 200))
            return f"verified {result.response_format}; re-asks {result.reasks}; {result.parsed}"

        check("structured", structured)
        check("structured2", structured)  # what was learned: no second refusal

        def counting() -> str:
            result = client.summarize(LONG[:6000], length="1 sentence")
            counted = backend.count_tokens(client.build_request("summarize", {"text": LONG[:6000],
                                                                              "length": "1 sentence"}, {}).messages,
                                           args.model)
            return (f"server {result.usage.prompt_tokens} prompt tokens, aigc counted {counted} "
                    f"({backend.counting(args.model).kind})")

        check("counting", counting)

        def long_input() -> str:
            result = client.summarize(LONG)
            return f"{result.requests} requests; window {client.context_window()}; {'; '.join(result.warnings)}"

        check("long input", long_input)

        def wrong_model() -> str:
            client.summarize(TEXT, model="no-such-model-here")
            return "accepted (the server ignores the model name)"

        check("wrong model", wrong_model)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
