"""``aigc serve`` beside ``transformers serve`` (and vLLM on a GPU) on the same model and machine, same run.

    .venv/bin/python bench/serve.py                              # CPU: 1, 8 and 32 concurrent clients
    .venv/bin/python bench/serve.py --clients 8 --max-tokens 32 --requests-per-client 1
    .venv/bin/python bench/serve.py --device cuda --baselines transformers,vllm     # on a GPU (bf16)
    .venv/bin/python bench/serve.py --json results.json

Each server runs as a subprocess on 127.0.0.1 (all started first; each level then measures them one after
the other, so a drift in the machine's load touches all of them alike), serving the converted SmolLM2-135M-Instruct folder (the
one aigc's local backend uses). Clients stream chat completions of the same prompts, greedy, with the same
``max_tokens``; tokens are counted with the model's tokenizer on the text received (the same rule for every
server), so tokens/s is generated tokens over the wall time of a concurrency level. Time to first token is the
time from sending a request to its first text. Baselines: ``transformers`` (``transformers serve``, one
generation at a time), ``transformers-cb`` (its ``--continuous-batching``), ``vllm`` (``vllm serve``, when
installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2  # noqa: E402

from aigc.backends.local import DEFAULT_MODEL  # noqa: E402
from aigc.backends.local import models as local_models  # noqa: E402
from aigc.config import load_settings  # noqa: E402

TOPICS = [
    "Hi", "Name three colors.", "What is the capital of Italy?",
    "Write a short poem about autumn leaves falling in a quiet park.",
    "Translate to French: the cat is sleeping on the warm windowsill.", "Give three tips for learning to program.",
    "Explain to a curious ten-year-old why the sky is blue.", "Describe a sunrise over the mountains.",
    "Tell me a joke about computers.", "What should I pack for a weekend hike?",
    "List the planets of the solar system.", "Write a haiku about the sea.",
]


@dataclass
class Level:
    server: str
    clients: int
    requests: int
    tokens: int
    seconds: float
    tokens_per_s: float
    ttft_p50: float
    ttft_p95: float
    failures: int


def prompts(n: int) -> list[str]:
    return [t if i < len(TOPICS) else f"{t} (take {i // len(TOPICS) + 1})"
            for i, t in enumerate(TOPICS * (n // len(TOPICS) + 1))][:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(name: str, folder: str, port: int, args: argparse.Namespace) -> list[str]:
    py = sys.executable
    if name == "aigc":
        return [py, "-m", "aigc", "serve", "--backend", "local", "--model", folder, "--port", str(port),
                "--max-batch", str(max(args.clients_list)), "--max-queue", "1024", "--no-access-log",
                *(["--device", args.device] if args.device else []), *(["--dtype", args.dtype] if args.dtype else [])]
    if name.startswith("transformers"):
        cmd = [str(Path(py).parent / "transformers"), "serve", folder, "--port", str(port), "--host", "127.0.0.1",
               "--device", args.device or "cpu", "--log-level", "warning"]
        if args.dtype:
            cmd += ["--dtype", args.dtype]
        return cmd + (["--continuous-batching"] if name == "transformers-cb" else [])
    if name == "vllm":
        return [str(Path(py).parent / "vllm"), "serve", folder, "--port", str(port), "--host", "127.0.0.1",
                "--dtype", args.dtype or "bfloat16", "--disable-log-requests"]
    raise SystemExit(f"unknown server {name!r}")


@contextlib.contextmanager
def running(name: str, folder: str, args: argparse.Namespace):
    port = free_port()
    env = {**os.environ, "AIGC_CACHE_DIR": str(args.cache_dir)}
    proc = subprocess.Popen(commands(name, folder, port, args), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {proc.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx2.HTTPError):  # aigc answers /ready once the model is loaded
                if httpx2.get(url + "/v1/models", timeout=5).status_code == 200 and \
                        httpx2.get(url + "/ready", timeout=5).status_code in (200, 404):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in {args.start_timeout}s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


async def one(http: httpx2.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, str]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    sent, first, text = time.perf_counter(), None, []
    async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
    return (first or time.perf_counter()) - sent, "".join(text)


async def level(name: str, url: str, model: str, clients: int, args: argparse.Namespace, count) -> Level:
    texts = prompts(max(args.min_requests, clients * args.requests_per_client))
    gate = asyncio.Semaphore(clients)
    limits = httpx2.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    async with httpx2.AsyncClient(timeout=args.request_timeout, limits=limits) as http:
        async def run(prompt: str):
            async with gate:
                return await one(http, url, model, prompt, args.max_tokens)

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(run(t) for t in texts), return_exceptions=True)
        seconds = time.perf_counter() - started
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        print(f"{name}: {len(failed)} request(s) failed, e.g. {failed[0]!r}", flush=True)
    ttfts = sorted(t for t, _ in done) or [float("nan")]
    tokens = sum(count(text) for _, text in done)
    return Level(name, clients, len(texts), tokens, round(seconds, 3), round(tokens / seconds, 2),
                 round(statistics.median(ttfts), 3), round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 3),
                 len(outcomes) - len(done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--min-requests", type=int, default=4, help="at least this many per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--baselines", default="transformers", help="transformers, transformers-cb, vllm")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 on a GPU")
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--request-timeout", type=float, default=900)
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = parser.parse_args()
    args.clients_list = [int(c) for c in args.clients.split(",")]
    settings = load_settings({"backend": "local"})
    args.cache_dir = settings.cache_dir
    spec = local_models.resolve_model(DEFAULT_MODEL)
    folder = str(local_models.ensure_converted(spec, settings.cache_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    results: list[Level] = []
    with contextlib.ExitStack() as stack:
        urls: dict[str, tuple[str, str]] = {}
        for name in ["aigc", *[b for b in args.baselines.split(",") if b]]:
            try:  # every server is up at once (idle ones cost nothing), so each level runs them back to back
                url = stack.enter_context(running(name, folder, args))
            except RuntimeError as e:
                print(f"{name}: skipped ({e})", flush=True)
                continue
            model = httpx2.get(url + "/v1/models").json()["data"][0]["id"]
            warm = argparse.Namespace(**{**vars(args), "requests_per_client": 2})
            asyncio.run(level(name, url, model, 1, warm, count))
            urls[name] = (url, model)
        for clients in args.clients_list:
            for name, (url, model) in urls.items():
                results.append(asyncio.run(level(name, url, model, clients, args, count)))
                r = results[-1]
                print(f"{name:<16} {clients:>3} clients  {r.tokens_per_s:8.1f} tok/s  TTFT p50 {r.ttft_p50:6.2f}s"
                      f"  p95 {r.ttft_p95:6.2f}s  ({r.tokens} tokens, {r.failures} failed)", flush=True)
    print()
    print(f"{'clients':>7} {'server':<16} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'aigc / this':>12}")
    for r in results:
        mine = next((x for x in results if x.server == "aigc" and x.clients == r.clients), None)
        ratio = f"{mine.tokens_per_s / r.tokens_per_s:.2f}x" if mine and r.server != "aigc" and r.tokens_per_s else ""
        print(f"{r.clients:>7} {r.server:<16} {r.tokens_per_s:>8.1f} {r.ttft_p50:>8.2f}s {r.ttft_p95:>8.2f}s {ratio:>12}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
