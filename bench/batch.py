"""Batch throughput under rate limits and faults: `aigc batch run` beside plain asyncio + the openai SDK.

    .venv/bin/python bench/batch.py            # 300 items, the defaults below
    .venv/bin/python bench/batch.py --json

The local test server runs in its own process with OpenAI-style limits enforced over one-second windows
(1,200 rpm = 20 requests in any second; tpm counts prompt tokens plus max output tokens), 300 ms latency,
3% 5xx answers and 1% dropped connections. Both contenders send the same prompts with the same output cap
and concurrency, against a freshly reset server:

- aigc: a job file with rpm/tpm limits, run by the batch runner (journal, outputs, cache off).
- baseline: ``asyncio.gather`` over a semaphore with the raw ``openai`` SDK and its own retries.

The ideal time is the largest of N/rpm, tokens/tpm and N*latency/concurrency; efficiency is ideal / wall
time, for a contender that finished every item (one that lost items did not do the job: no figure). The
server counts 429s, requests re-sent before the Retry-After they were given, and duplicated requests (the
same body answered twice).

The default output cap (44 tokens) makes each request 124 tokens, so both limits allow 20 requests a
second and the ideal is reachable. With 128-token requests only 19 fit in a 2,500-token second, and no
client can reach the ideal, which counts tokens as if they could be split across seconds
(``--max-output-tokens 48`` shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aigc.templates import TemplateLibrary  # noqa: E402
from tests.openai_server import count_prompt_tokens  # noqa: E402

MODEL = "gpt-4o-mini"
PLACES = ["harbour", "library", "station", "market", "bridge", "school", "clinic", "museum", "park", "depot"]


def article(i: int) -> str:
    place = PLACES[i % len(PLACES)]
    return (f"Item {i}: the council approved {i * 3 + 7} new benches for the {place}, "
            f"to be installed by week {i % 52 + 1}.")


def start_server(args) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, str(REPO / "tests" / "openai_server.py"), "--port", "0",
           "--latency", str(args.latency), "--rpm", str(args.rpm), "--tpm", str(args.tpm),
           "--error-rate", str(args.error_rate), "--drop-rate", str(args.drop_rate), "--seed", str(args.seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the test server did not start")
    return proc, url


def control(url: str, path: str, method: str = "GET") -> dict:
    base = url.removesuffix("/v1")
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def reset(url: str) -> None:
    control(url, "/_control/reset", "POST")
    time.sleep(1.1)  # let the server's rate windows drain


def server_stats(url: str) -> dict:
    return control(url, "/_control/stats")["stats"]


def prompts(n: int, length: str) -> list[list[dict]]:
    template = TemplateLibrary().get("summarize")
    return [[m.model_dump(exclude_none=True) for m in template.render(text=article(i), length=length)]
            for i in range(n)]


# ---- aigc ---------------------------------------------------------------------------------------------------

JOB = """
name = "bench"
task = "summarize"
[input]
glob = "articles/*.txt"
[output]
dir = "out"
[vars]
length = "{length}"
[model]
backend = "openai"
model = "{model}"
max_output_tokens = {max_out}
[limits]
concurrency = {concurrency}
rpm = {rpm}
tpm = {tpm}
"""


def run_aigc(args, url: str, folder: Path) -> dict:
    from aigc.batch import Runner, load_job
    from aigc.tokens import get_encoding

    (folder / "articles").mkdir(parents=True)
    for i in range(args.items):
        (folder / "articles" / f"item-{i:04d}.txt").write_text(article(i) + "\n")
    job_path = folder / "job.toml"
    job_path.write_text(JOB.format(length=args.length, model=MODEL, max_out=args.max_output_tokens,
                                   concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm))
    os.environ.update(OPENAI_BASE_URL=url, OPENAI_API_KEY="sk-bench", AIGC_DATA_DIR=str(folder / "data"),
                      AIGC_CONFIG=str(folder / "none.toml"))
    get_encoding("o200k_base")  # loaded once per process, before the clock starts, as the SDK needs none
    runner = Runner(load_job(job_path), use_cache=False)
    started = time.perf_counter()
    report = asyncio.run(runner.run())
    wall = time.perf_counter() - started
    written = len(list((folder / "out").iterdir()))
    return {"wall_s": wall, "done": report.done, "failed": report.failed + report.pending, "outputs": written,
            "exit_code": report.exit_code}


# ---- the baseline ---------------------------------------------------------------------------------------------

def run_baseline(args, url: str, messages: list[list[dict]]) -> dict:
    import openai

    async def main() -> tuple[int, int]:
        client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench")  # the SDK's default retries
        gate = asyncio.Semaphore(args.concurrency)

        async def one(m: list[dict]):
            async with gate:
                return await client.chat.completions.create(model=MODEL, messages=m,
                                                            max_tokens=args.max_output_tokens)

        results = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
        await client.close()
        failed = sum(isinstance(r, BaseException) for r in results)
        return len(results) - failed, failed

    started = time.perf_counter()
    done, failed = asyncio.run(main())
    return {"wall_s": time.perf_counter() - started, "done": done, "failed": failed}


def warm_up(url: str) -> None:
    """One request through the SDK first: its one-time setup (imports, model classes) is timed for
    neither contender."""
    import openai

    async def one() -> None:
        client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=5)
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=5)
        await client.close()

    asyncio.run(one())


# ---- report ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--tpm", type=float, default=150_000)
    parser.add_argument("--error-rate", type=float, default=0.03)
    parser.add_argument("--drop-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-output-tokens", type=int, default=44)
    parser.add_argument("--length", default="1 sentence")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    logging.getLogger("aigc").setLevel(logging.ERROR)

    messages = prompts(args.items, args.length)
    tokens = sum(count_prompt_tokens(MODEL, m) + args.max_output_tokens for m in messages)
    ideal_parts = {"rpm": args.items / args.rpm * 60, "tpm": tokens / args.tpm * 60,
                   "latency": args.items * args.latency / args.concurrency}
    ideal = max(ideal_parts.values())

    server, url = start_server(args)
    results = {}
    try:
        warm_up(url)
        with tempfile.TemporaryDirectory() as tmp:
            contenders = [("aigc", lambda: run_aigc(args, url, Path(tmp)))]
            if not args.skip_baseline:
                contenders.append(("baseline", lambda: run_baseline(args, url, messages)))
            for name, run in contenders:
                reset(url)
                figures = run()
                stats = server_stats(url)
                figures.update(
                    efficiency=ideal / figures["wall_s"] if figures["failed"] == 0 else None,
                    requests=stats["requests"], rate_limited=stats["rate_limited"],
                    resent_early=stats["resent_early"],
                    duplicates=stats["duplicates"], server_errors=sum(
                        n for code, n in stats["errors_by_status"].items() if int(code) >= 500),
                    dropped=stats["dropped"])
                results[name] = figures
    finally:
        server.terminate()
        server.wait(timeout=10)

    setup = {"items": args.items, "concurrency": args.concurrency, "latency_s": args.latency, "rpm": args.rpm,
             "tpm": args.tpm, "error_rate": args.error_rate, "drop_rate": args.drop_rate, "seed": args.seed,
             "tokens_per_request": round(tokens / args.items, 1), "ideal_s": ideal,
             "ideal_parts_s": ideal_parts}
    if args.json:
        print(json.dumps({"setup": setup, "results": results}, indent=2))
        return 0
    print(f"{args.items} items, concurrency {args.concurrency}, latency {args.latency:g}s, rpm {args.rpm:g}, "
          f"tpm {args.tpm:g}, {args.error_rate:.0%} 5xx, {args.drop_rate:.0%} dropped; "
          f"{tokens / args.items:.0f} tokens per request (prompt + max output)")
    print(f"ideal {ideal:.1f}s = max(N/rpm {ideal_parts['rpm']:.1f}s, tokens/tpm {ideal_parts['tpm']:.1f}s, "
          f"N*latency/concurrency {ideal_parts['latency']:.1f}s)")
    header = f"{'':<10}{'wall s':>8}{'efficiency':>11}{'done':>6}{'failed':>7}{'requests':>9}{'429s':>6}" \
             f"{'early':>7}{'dupes':>7}{'5xx':>5}{'drops':>6}"
    print(header)
    for name, r in results.items():
        efficiency = "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        print(f"{name:<10}{r['wall_s']:>8.1f}{efficiency:>11}{r['done']:>6}{r['failed']:>7}"
              f"{r['requests']:>9}{r['rate_limited']:>6}{r['resent_early']:>7}{r['duplicates']:>7}"
              f"{r['server_errors']:>5}{r['dropped']:>6}")
    print("early: requests re-sent before their Retry-After; dupes: the same request answered twice; "
          "efficiency: ideal / wall, for a run that did every item")
    return 0


if __name__ == "__main__":
    sys.exit(main())
