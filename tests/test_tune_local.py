"""`aigc tune local`: SmolLM2-135M learns a reply style on the CPU, resumes after kill -9, and loads everywhere.

The data set (tests/data/beep.jsonl) answers 48 simple questions, always starting with "Beep boop!" — a
style the base model never uses. One short training run is shared by the module's tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aigc.tune
from aigc.backends.local import LocalBackend
from aigc.cli import main
from aigc.config import load_settings
from aigc.types import ChatRequest, Message
from tests.conftest import MODEL_CACHE

# About a minute of training on a quiet 2-core machine, but many on a busy one: more than the default timeout.
pytestmark = [pytest.mark.local, pytest.mark.slow, pytest.mark.timeout(3600)]

DATA = Path(__file__).parent / "data" / "beep.jsonl"
STEPS = 12
HELD_OUT = [  # questions the training data does not have
    "What is the capital of Spain?", "How many eyes does a person have?", "What color is snow?",
    "Which animal barks?", "What is the largest planet?", "What do birds use to fly?",
    "What is three plus three?", "Where do penguins live?",
]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One training run: (result, progress snapshots, settings)."""
    root = tmp_path_factory.mktemp("tuned")
    settings = load_settings({"cache_dir": MODEL_CACHE, "data_dir": root / "data"}, env={})
    snapshots: list = []
    result = aigc.tune.local(DATA, root / "models" / "beep", steps=STEPS, learning_rate=2e-3, save_every=6,
                             settings=settings, progress=snapshots.append, eval_suite=_suite(root))
    return result, snapshots, settings


def _suite(root: Path) -> Path:
    """An eval suite run on the base and the tuned model after training: does the reply start the trained way?"""
    (root / "style.jsonl").write_text("".join(
        json.dumps({"id": str(i), "question": q, "context": "Answer briefly.", "reference": "Beep boop!"}) + "\n"
        for i, q in enumerate(HELD_OUT[:3])), encoding="utf-8")
    suite = root / "style.toml"
    suite.write_text('name = "style"\ntask = "answer"\ndata = "style.jsonl"\n[[candidates]]\nname = "model"\n'
                     'backend = "local"\nmax_output_tokens = 8\ntemperature = 0\n', encoding="utf-8")
    return suite


def replies(model: str, settings) -> list[str]:
    backend = LocalBackend(settings.model_copy(update={"model": model}))
    try:
        return [backend.generate(ChatRequest(messages=[Message(role="user", content=q)], model=model,
                                             max_tokens=12, temperature=0)).text for q in HELD_OUT]
    finally:
        backend.close()


def test_held_out_loss_falls(tuned):
    result, _, _ = tuned
    assert result.steps == STEPS and result.examples_train == 43 and result.examples_eval == 5
    assert result.eval_loss_after < 0.5 * result.eval_loss_before
    assert result.train_loss is not None and result.train_tokens > 0 and result.tokens_per_s > 0


def test_the_tuned_model_follows_the_style_the_base_does_not(tuned):
    result, _, settings = tuned
    base = replies("SmolLM2-135M-Instruct", settings)
    tuned_replies = replies(result.output, settings)
    base_hits = sum(r.startswith("Beep boop!") for r in base)
    tuned_hits = sum(r.startswith("Beep boop!") for r in tuned_replies)
    assert base_hits == 0, base
    assert tuned_hits >= 6, tuned_replies


def test_the_folder_has_what_loaders_need_and_a_model_card(tuned):
    result, _, _ = tuned
    out = Path(result.output)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json", "adapter/adapter_config.json", "README.md", "aigc-tune.json"):
        assert (out / name).is_file(), name
    base = MODEL_CACHE / "models" / "SmolLM2-135M-Instruct"
    assert (out / "chat_template.jinja").read_text() == (base / "chat_template.jinja").read_text()
    generation = json.loads((out / "generation_config.json").read_text())
    tokenizer = json.loads((out / "tokenizer_config.json").read_text())
    assert generation["eos_token_id"] == 2 and generation["pad_token_id"] != 2  # pad is not EOS
    assert tokenizer["pad_token"] == "<|endoftext|>" and tokenizer["eos_token"] == "<|im_end|>"
    card = json.loads((out / "aigc-tune.json").read_text())
    assert card["base_model"] == "SmolLM2-135M-Instruct" and card["steps"] == STEPS
    assert card["data_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()
    assert card["eval_loss_before"] > card["eval_loss_after"] and card["created"].startswith("20")
    assert "SmolLM2-135M-Instruct" in (out / "README.md").read_text()
    paired = card["eval_suite"]  # the suite run on the base and the tuned folder, after training
    assert [c["name"] for c in paired["candidates"]] == ["base", "tuned"]
    assert paired["comparisons"] and paired["comparisons"][0]["baseline"] == "base"
    assert "eval suite" in (out / "README.md").read_text()
    assert not (out.parent / ".beep.tune").exists()  # checkpoints are cleaned up after success
    assert [p.name for p in out.parent.iterdir()] == ["beep"]


def test_progress_was_reported(tuned):
    _, snapshots, _ = tuned
    phases = [s.phase for s in snapshots]
    assert phases[0] == "loading" and phases[-1] == "done"
    assert {"evaluating", "training", "saving"} <= set(phases)
    steps = [s.step for s in snapshots if s.phase == "training"]
    assert steps == sorted(steps) and steps[-1] == STEPS


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code


def test_it_loads_with_backend_local_and_by_alias(tuned, capsys, monkeypatch):
    result, _, settings = tuned
    monkeypatch.setenv("AIGC_DATA_DIR", str(settings.data_dir))
    assert run("ask", "What color is snow?", "--backend", "local", "--model", result.output, "--max-tokens", "12") == 0
    assert capsys.readouterr().out.strip()
    assert run("tune", "alias", "beep-local", result.output) == 0
    assert "beep-local" in capsys.readouterr().out
    assert run("ask", "What color is snow?", "--model", "beep-local", "--max-tokens", "12", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["backend"] == "local" and answer["model"] == result.output
    assert run("tune", "list") == 0
    listing = capsys.readouterr().out
    assert "local" in listing and "succeeded" in listing and result.output in listing


def test_the_same_run_again_is_already_done(tuned):
    result, _, settings = tuned
    again = aigc.tune.local(DATA, result.output, steps=STEPS, learning_rate=2e-3, save_every=6, settings=settings)
    assert again.already_done and again.eval_loss_after == result.eval_loss_after
    with pytest.raises(aigc.InputError, match="already exists"):
        aigc.tune.local(DATA, result.output, steps=STEPS + 1, settings=settings)


def tune_process(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "aigc", "tune", "local", str(DATA), "-o", str(out), "--steps", "6",
            "--save-every", "2", "--batch-size", "1", "--eval-fraction", "0", *extra]


def test_kill_9_then_the_same_command_resumes_to_the_same_final_step(tmp_path):
    out = tmp_path / "models" / "k9"
    checkpoints = tmp_path / "models" / ".k9.tune" / "checkpoints"
    env = {**os.environ, "AIGC_CACHE_DIR": str(MODEL_CACHE)}
    first = subprocess.Popen(tune_process(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 400
    while not (checkpoints / "checkpoint-2" / "aigc-complete.json").exists() and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert not out.exists()
    # A checkpoint the kill left half-written must not be used.
    torn = checkpoints / "checkpoint-5"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    # Other settings refuse to mix with these checkpoints.
    other = subprocess.run(tune_process(out, "--learning-rate", "0.01"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2 and "--restart" in other.stderr
    second = subprocess.run(tune_process(out, "--json"), env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["steps"] == 6 and result["resumed_from_step"] in (2, 4)
    card = json.loads((out / "aigc-tune.json").read_text())
    assert card["resumed_from_step"] == result["resumed_from_step"] and card["steps"] == 6
    assert (out / "model.safetensors").is_file() and not checkpoints.exists()
