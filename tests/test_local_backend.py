"""The local backend with the real SmolLM2-135M-Instruct on CPU.

The model follows instructions loosely, so these tests check structure and behaviour (usage, finish reasons,
batch/stream consistency), never wording. The converted model is cached across runs (see conftest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time

import pytest

from aigc.backends.local import DEFAULT_MODEL, LocalBackend, hardware
from aigc.backends.local import models as local_models
from aigc.config import load_settings
from aigc.errors import BackendUnavailable, ConfigError, ContextLengthExceeded
from aigc.types import ChatRequest, Completion, Message
from tests.conftest import MODEL_CACHE, REPO

pytestmark = pytest.mark.local

QUESTION = [Message(role="user", content="What is the capital of France?")]
PROMPTS = [
    "Hi",
    "Name a color.",
    "What is the capital of France? Answer in one word.",
    "Write one sentence about the sea, the wind and the long nights of winter on a small island.",
    "Explain to a child, in two short sentences and with simple, friendly words, why the sky looks blue.",
]
MAX_TOKENS = 16


def ask(content: str | list[Message], **kw) -> ChatRequest:
    messages = [Message(role="user", content=content)] if isinstance(content, str) else content
    return ChatRequest(messages=messages, model=DEFAULT_MODEL, **kw)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def first_load():
    """A backend whose model is loaded once for the module: (backend, seconds, converted now)."""
    logger = logging.getLogger("aigc.local")
    records, level = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    backend = LocalBackend(load_settings({"backend": "local"}, env={"AIGC_CACHE_DIR": str(MODEL_CACHE)}))
    try:
        started = time.perf_counter()
        backend.count_tokens(QUESTION, DEFAULT_MODEL)
        elapsed = time.perf_counter() - started
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    converted = any(m.startswith("converting") for m in records.messages)
    yield backend, elapsed, converted
    backend.close()


@pytest.fixture(scope="module")
def backend(first_load) -> LocalBackend:
    return first_load[0]


@pytest.fixture(scope="module")
def one_by_one(backend) -> list[Completion]:
    """Greedy completions of PROMPTS, one request at a time: the reference for batches and streams."""
    return [backend.generate(ask(p, max_tokens=MAX_TOKENS)) for p in PROMPTS]


@pytest.fixture(scope="module")
def tokenizer(backend):
    """The model's tokenizer, loaded on its own to check the backend's counts."""
    from transformers import AutoTokenizer

    folder = local_models.converted_folder(local_models.resolve_model(DEFAULT_MODEL), MODEL_CACHE)
    return AutoTokenizer.from_pretrained(folder)


def test_the_default_model_is_converted_once_and_then_loaded_from_the_cache(first_load, caplog):
    _, first_seconds, converted_now = first_load
    spec = local_models.resolve_model(DEFAULT_MODEL)
    folder = local_models.converted_folder(spec, MODEL_CACHE)
    assert local_models.is_converted(spec, MODEL_CACHE)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.parent.glob(f".{folder.name}.*.tmp")), "a temporary folder was left behind"

    caplog.set_level(logging.INFO, logger="aigc.local")
    again = LocalBackend(load_settings({"backend": "local"}))
    started = time.perf_counter()
    assert again.context_window(DEFAULT_MODEL) == 8192
    cached_seconds = time.perf_counter() - started
    again.close()

    assert not [r for r in caplog.records if r.getMessage().startswith("converting")]
    assert cached_seconds < 15
    if converted_now:
        assert cached_seconds < first_seconds / 3


def test_generate_reports_usage_counted_by_the_models_tokenizer(backend, tokenizer):
    completion = backend.generate(ask(QUESTION, max_tokens=40))

    assert completion.text.strip()
    assert completion.model == DEFAULT_MODEL
    assert completion.request_id.startswith("local-")
    assert completion.finish_reason == "stop"
    chat = [{"role": m.role, "content": m.content} for m in QUESTION]
    prompt = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert completion.usage.prompt_tokens == len(prompt)
    # The end-of-turn token the model emitted is counted as generated.
    text_tokens = len(tokenizer(completion.text, add_special_tokens=False)["input_ids"])
    assert completion.usage.completion_tokens == text_tokens + 1


def test_count_tokens_equals_the_prompt_tokens_generate_reports(backend):
    conversations = [
        QUESTION,
        [Message(role="system", content="You answer briefly."), Message(role="user", content="Say hello.")],
        [
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello! How can I help?"),
            Message(role="user", content="Name a fruit."),
        ],
    ]
    for messages in conversations:
        completion = backend.generate(ask(messages, max_tokens=1))
        assert backend.count_tokens(messages, DEFAULT_MODEL) == completion.usage.prompt_tokens
    assert backend.count_text("hello world", DEFAULT_MODEL) == 2
    assert backend.max_output_tokens(DEFAULT_MODEL) == backend.context_window(DEFAULT_MODEL) == 8192


def test_a_tiny_max_tokens_stops_with_finish_reason_length(backend):
    completion = backend.generate(ask(PROMPTS[3], max_tokens=3))

    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 3
    assert completion.text


def test_logprobs_when_asked_and_a_greedy_pick_is_always_the_likeliest(backend, one_by_one):
    completion = backend.generate(ask(PROMPTS[0], max_tokens=MAX_TOKENS, logprobs=2))

    assert completion.text == one_by_one[0].text  # asking for them changes nothing else
    assert "".join(t.token for t in completion.logprobs) == completion.text
    assert all(t.top[0][0] == t.token and t.top[0][1] == pytest.approx(t.logprob) for t in completion.logprobs)
    assert one_by_one[0].logprobs is None


def test_stop_strings_end_the_text_before_them(backend):
    full = backend.generate(ask(QUESTION, max_tokens=40)).text
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    request = ask(QUESTION, max_tokens=40, stop=[stop])

    completion = backend.generate(request)
    streamed = list(backend.stream(request))

    assert completion.text == full[: full.index(stop)]
    assert completion.finish_reason == "stop"
    assert "".join(d.text for d in streamed[:-1]) == completion.text
    assert streamed[-1].completion.usage == completion.usage


def test_streamed_text_equals_the_generated_text(backend, one_by_one):
    expected = one_by_one[4]

    deltas = list(backend.stream(ask(PROMPTS[4], max_tokens=MAX_TOKENS)))

    assert len(deltas) > 2
    assert all(d.completion is None for d in deltas[:-1])
    final = deltas[-1].completion
    assert "".join(d.text for d in deltas[:-1]) == final.text == expected.text
    assert final.usage == expected.usage
    assert final.finish_reason == expected.finish_reason


def test_a_batch_gives_the_same_outputs_as_one_by_one(backend, one_by_one):
    batched = backend.generate_batch([ask(p, max_tokens=MAX_TOKENS) for p in PROMPTS])

    for single, batch in zip(one_by_one, batched, strict=True):
        assert (batch.text, batch.finish_reason, batch.usage) == (
            single.text,
            single.finish_reason,
            single.usage,
        )
    assert {c.finish_reason for c in batched} == {"stop", "length"}, (
        "the prompts should exercise both endings"
    )


def test_a_prompt_longer_than_the_context_window_is_refused(backend):
    with pytest.raises(ContextLengthExceeded, match="8192"):
        backend.generate(ask("word " * 9000))
    with pytest.raises(ContextLengthExceeded, match="max_output_tokens"):
        backend.generate(ask("Hi", max_tokens=8192))


def test_a_json_schema_is_asked_for_in_the_prompt(backend):
    schema = {"name": "city", "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}

    completion = backend.generate(ask(QUESTION, max_tokens=8, json_schema=schema))

    assert completion.response_format == "prompt"
    assert completion.usage.prompt_tokens > backend.count_tokens(QUESTION, DEFAULT_MODEL) + 10


def test_a_seed_makes_sampling_repeatable(backend):
    request = ask(PROMPTS[3], max_tokens=8, temperature=1.0, seed=7)

    assert backend.generate(request).text == backend.generate(request).text


async def test_async_calls_do_not_block_and_concurrent_streams_stay_apart(backend, one_by_one):
    first, second = ask(PROMPTS[2], max_tokens=MAX_TOKENS), ask(PROMPTS[4], max_tokens=MAX_TOKENS)
    expected = [one_by_one[2].text, one_by_one[4].text]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def collect(request: ChatRequest) -> str:
        return "".join([d.text async for d in backend.astream(request)])

    ticker = asyncio.create_task(tick())
    completion = await backend.agenerate(first)
    streamed = await asyncio.gather(collect(first), collect(second))
    ticker.cancel()

    assert completion.text == expected[0]
    assert list(streamed) == expected
    assert ticks > 10, "the event loop was blocked while the model ran"


def test_importing_the_backend_does_not_import_torch():
    code = "import sys, aigc.backends.local; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize(
    "model, message",
    [
        ("/no/such/dir/model.gguf", "does not exist"),
        ("./missing-model-folder/weights", "does not exist"),
    ],
)
def test_a_missing_model_path_is_a_config_error(model, message):
    backend = LocalBackend(load_settings({"backend": "local", "model": model}))
    with pytest.raises(ConfigError, match=message) as caught:
        backend.generate(ask("Hi").model_copy(update={"model": model}))
    assert not isinstance(caught.value, BackendUnavailable)


def test_a_folder_without_a_model_is_a_config_error(tmp_path):
    backend = LocalBackend(load_settings({"backend": "local"}))
    with pytest.raises(ConfigError, match="no config.json"):
        backend.count_tokens(QUESTION, str(tmp_path))


def test_a_hub_model_that_cannot_be_fetched_is_a_config_error():
    # In a fresh process, so the Hub client reads the offline switch the fixtures set (it reads it on import).
    code = (
        "from aigc.backends.local import LocalBackend; from aigc.config import load_settings; "
        "from aigc.errors import ConfigError; from aigc.types import Message\n"
        "try:\n"
        "    LocalBackend(load_settings({'backend': 'local'})).count_tokens(\n"
        "        [Message(role='user', content='Hi')], 'HuggingFaceTB/SmolLM2-360M-Instruct')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "from the Hugging Face Hub" in done.stdout and "local model folder" in done.stdout


@pytest.mark.parametrize(
    "setting, message",
    [({"device": "cuda:7"}, "cuda"), ({"device": "toaster"}, "unknown device"), ({"dtype": "int3"}, "dtype")],
)
def test_an_unusable_device_or_dtype_is_a_config_error(setting, message):
    backend = LocalBackend(load_settings({"backend": "local", **setting}))
    with pytest.raises(ConfigError, match=message):
        backend.count_tokens(QUESTION, DEFAULT_MODEL)


def test_the_hardware_probe_describes_the_machine_and_the_default_model(first_load):
    report = hardware.probe(load_settings({"backend": "local"}))

    assert report.local_extra_installed and report.torch_imported
    assert report.device in {"cpu", "cuda", "mps"}
    assert report.dtype == ("float32" if report.device == "cpu" else report.dtype)
    assert report.ram_total_bytes and report.ram_total_bytes >= (report.ram_available_bytes or 0)
    assert report.model.name == DEFAULT_MODEL and report.model.kind == "gguf"
    assert report.model.converted is True
    assert 130_000_000 < report.model.parameters < 140_000_000
    assert hardware.count_parameters(report.model.location) == report.model.parameters
    assert report.model.fits is True
    json.loads(report.model_dump_json())


def test_the_probe_without_torch_does_not_import_it():
    code = (
        "import sys, aigc.backends.local.hardware as h; r = h.probe(import_torch=False); "
        "assert 'torch' not in sys.modules and r.torch_version is None and r.model.parameters"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
