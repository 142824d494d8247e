"""Per-call cost of ``aigc`` against the raw ``openai`` SDK, same server, same run.

The OpenAI-compatible test server runs in its own process with zero latency, so what is measured is the
client side: template rendering, token counting and the context/budget checks, the retry wrapper, result
building and (by default) the usage ledger. Both sides send the same messages with the same parameters.
Rounds alternate between the two so drifts of the machine hit both equally; the median per-call time of
each is reported, and their ratio.

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


def per_call(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    server, url = start_server()
    data_dir = tempfile.mkdtemp(prefix="aigc-bench-")
    os.environ["AIGC_DATA_DIR"] = data_dir  # the ledger goes to a scratch folder
    try:
        raw = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)
        client = aigc.Client(base_url=url, api_key="sk-bench", model="gpt-4o-mini")
        quiet = aigc.Client(base_url=url, api_key="sk-bench", model="gpt-4o-mini", ledger=False)
        request = client._request("summarize", {"text": TEXT, "length": "2 sentences"}, {})
        messages = [m.model_dump(exclude_none=True) for m in request.messages]

        def call_raw() -> None:
            raw.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                        temperature=request.temperature, max_tokens=request.max_tokens)

        def call_aigc() -> None:
            client.summarize(TEXT, length="2 sentences")

        def call_quiet() -> None:
            quiet.summarize(TEXT, length="2 sentences")

        for fn in (call_raw, call_aigc, call_quiet):  # warm up connections, caches, encodings
            per_call(fn, 30)
        times: dict[str, list[float]] = {"raw": [], "aigc": [], "aigc_no_ledger": []}
        for _ in range(args.rounds):
            times["raw"].append(per_call(call_raw, args.calls))
            times["aigc"].append(per_call(call_aigc, args.calls))
            times["aigc_no_ledger"].append(per_call(call_quiet, args.calls))
        client.close()
        quiet.close()
        raw.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "calls_per_round": args.calls, "rounds": args.rounds,
        "raw_sdk_ms": round(med["raw"] * 1e3, 3),
        "aigc_ms": round(med["aigc"] * 1e3, 3),
        "aigc_no_ledger_ms": round(med["aigc_no_ledger"] * 1e3, 3),
        "ratio": round(med["aigc"] / med["raw"], 3),
        "ratio_no_ledger": round(med["aigc_no_ledger"] / med["raw"], 3),
        "target": "<= 1.10",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"per call, median of {args.rounds} rounds x {args.calls} calls (test server, zero latency)")
    print(f"  raw openai SDK          {result['raw_sdk_ms']:8.3f} ms")
    print(f"  aigc.summarize          {result['aigc_ms']:8.3f} ms   ratio {result['ratio']:.3f}x")
    print(f"  aigc.summarize, no ledger {result['aigc_no_ledger_ms']:6.3f} ms   ratio {result['ratio_no_ledger']:.3f}x")
    print("  target: ratio <= 1.10")


if __name__ == "__main__":
    main()
