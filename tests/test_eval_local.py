"""An eval of a hosted-style candidate (the OpenAI-compatible test server) against the real local model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sacrebleu")

from tests.openai_server import FakeOpenAIServer  # noqa: E402
from tests.test_batch_job import run_cli, use_server  # noqa: E402
from tests.test_eval_run import FACTS, reply_for, write_suite  # noqa: E402

pytestmark = [pytest.mark.local, pytest.mark.slow]

SUITE = """
    name = "local-vs-server"
    task = "summarize"
    data = "data.jsonl"
    metrics = ["rouge", "chrf"]
    [vars]
    length = "1 sentence"
    [limits]
    concurrency = 3
    [[candidates]]
    name = "server"
    backend = "openai"
    model = "good-model"
    max_output_tokens = 40
    temperature = 0
    [[candidates]]
    name = "smollm"
    backend = "local"
    max_output_tokens = 24
    temperature = 0
"""


def test_an_eval_of_the_test_server_against_the_local_model(monkeypatch, tmp_path, capsys):
    with FakeOpenAIServer(reply=reply_for) as server:
        use_server(monkeypatch, server)
        models = tmp_path / "models.toml"
        models.write_text('[models."good-model"]\ncontext_window = 8192\nmax_output_tokens = 4096\n'
                          'input_price = 2.50\noutput_price = 10.00\n')
        monkeypatch.setenv("AIGC_MODELS_FILE", str(models))
        suite = write_suite(tmp_path, SUITE, facts=FACTS[:3])
        code, out, err = run_cli(capsys, "eval", "run", suite, "--json", "-o", tmp_path / "report.html")
        assert code == 0, err
        report = json.loads(out)
        server_c, local = report["candidates"]
        assert server.request_count == 3
        assert local["backend"] == "local" and local["model_snapshot"]["served"] == ["SmolLM2-135M-Instruct"]
        assert local["usage"]["cost_usd"] == 0.0  # the compute is yours
        assert local["usage"]["completion_tokens"] > 0 and local["usage"]["latency_p50_s"] > 0
        assert all(i["candidates"]["smollm"]["outputs"][0]["text"].strip() for i in report["items"])
        assert 0 < local["scores"]["rouge1"]["value"] < server_c["scores"]["rouge1"]["value"] == 1.0
        assert report["best"]["rouge1"] == "server" and report["best"]["cost_usd"] == "smollm"
        assert server_c["usage"]["cost_usd"] > 0
        assert (tmp_path / "report.html").stat().st_size > 10_000
