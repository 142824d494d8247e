"""Per-call cost of ``aigc`` against the raw ``openai`` SDK, same server, same run.

The OpenAI-compatible test server runs in its own process with zero latency, so what is measured is the
client side: template rendering, token counting and the context/budget checks, the retry wrapper, result
building and (by default) the usage ledger. Both sides send the same messages with the same parameters.
Short rounds alternate between the sides (and which goes first), so drifts of the machine hit all
equally; the ratio is the median of the per-round ratios. Client CPU time per call is shown too.

Two raw baselines: ``chat.completions.create`` (what people write; the target is measured against it) and
the SDK's ``client.post`` with a ready JSON body, the path aigc itself sends on — the gap to that one is
aigc's own work alone.

    .venv/bin/python bench/overhead.py [--calls 300] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx2  # noqa: E402
import openai  # noqa: E402

import aigc  # noqa: E402

TEXT = ("The town council approved a plan on Tuesday to convert the old tram depot into a public library, "
        "with construction due to start next spring and a budget of 4.5 million euros.")


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the test server did not start")
    return proc, url


def per_call(fn, calls: int) -> tuple[float, float]:
    """Wall and client-CPU seconds per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    server, url = start_server()
    data_dir = tempfile.mkdtemp(prefix="aigc-bench-")
    os.environ["AIGC_DATA_DIR"] = data_dir  # the ledger goes to a scratch folder
    os.environ["AIGC_LOCAL_SERVER"] = "false"  # the test server stands for the hosted API: plain requests
    try:
        raw = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)
        client = aigc.Client(base_url=url, api_key="sk-bench", model="gpt-4o-mini")
        quiet = aigc.Client(base_url=url, api_key="sk-bench", model="gpt-4o-mini", ledger=False)
        request = client.build_request("summarize", {"text": TEXT, "length": "2 sentences"}, {})
        messages = [m.model_dump(exclude_none=True) for m in request.messages]

        def call_raw() -> None:
            raw.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                        temperature=request.temperature, max_tokens=request.max_output_tokens)

        body = {"model": "gpt-4o-mini", "messages": messages, "temperature": request.temperature,
                "max_completion_tokens": request.max_output_tokens}

        def call_post() -> None:
            raw.post("/chat/completions", body=body, cast_to=httpx2.Response).json()

        def call_aigc() -> None:
            client.summarize(TEXT, length="2 sentences")

        def call_quiet() -> None:
            quiet.summarize(TEXT, length="2 sentences")

        for fn in (call_raw, call_post, call_aigc, call_quiet):  # warm up connections, caches, encodings
            per_call(fn, 30)
        sides = {"raw": call_raw, "post": call_post, "aigc": call_aigc, "aigc_no_ledger": call_quiet}
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))  # neither side always goes first
            for name in order:
                times[name].append(per_call(sides[name], args.calls))
        client.close()
        quiet.close()
        raw.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    def ratio(side: str, which: int, base: str = "raw") -> float:  # median of per-round ratios: drift cancels
        return statistics.median(a[which] / b[which] for a, b in zip(times[side], times[base], strict=True))

    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    result = {
        "calls_per_round": args.calls, "rounds": args.rounds,
        "raw_sdk_ms": round(med["raw"][0] * 1e3, 3),
        "raw_post_ms": round(med["post"][0] * 1e3, 3),
        "aigc_ms": round(med["aigc"][0] * 1e3, 3),
        "aigc_no_ledger_ms": round(med["aigc_no_ledger"][0] * 1e3, 3),
        "ratio": round(ratio("aigc", 0), 3),
        "ratio_no_ledger": round(ratio("aigc_no_ledger", 0), 3),
        "ratio_post": round(ratio("post", 0), 3),
        "ratio_vs_post": round(ratio("aigc", 0, "post"), 3),
        "client_cpu_ms": {k: round(v[1] * 1e3, 3) for k, v in med.items()},
        "client_cpu_ratio": round(ratio("aigc", 1), 3),
        "target": "<= 1.10",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"per call, median of {args.rounds} rounds x {args.calls} calls (test server, zero latency)")
    print(f"  {'':28} {'wall ms':>8} {'ratio':>7} {'client CPU ms':>14}")
    cpu = result["client_cpu_ms"]
    print(f"  {'raw SDK, completions.create':28} {result['raw_sdk_ms']:8.3f} {1:7.3f} {cpu['raw']:14.3f}")
    print(f"  {'raw SDK, client.post':28} {result['raw_post_ms']:8.3f} {result['ratio_post']:7.3f}"
          f" {cpu['post']:14.3f}")
    print(f"  {'aigc.summarize':28} {result['aigc_ms']:8.3f} {result['ratio']:7.3f} {cpu['aigc']:14.3f}")
    print(f"  {'aigc.summarize, no ledger':28} {result['aigc_no_ledger_ms']:8.3f} {result['ratio_no_ledger']:7.3f}"
          f" {cpu['aigc_no_ledger']:14.3f}")
    print(f"  aigc.summarize / raw client.post: {result['ratio_vs_post']:.3f} (aigc's own work)")
    print("  target: wall ratio <= 1.10 (against completions.create)")


if __name__ == "__main__":
    main()
