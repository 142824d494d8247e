"""The library as an app developer uses it: tasks, results, structured output, streaming, configuration."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

import aigc
from aigc.config import load_settings
from tests.openai_server import FakeOpenAIServer

KEY = "sk-test-SECRET-abcdef123456"


class Capital(BaseModel):
    country: str
    capital: str
    population_millions: float


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def client(server):
    with aigc.Client(base_url=server.url, api_key=KEY, model="gpt-4o-mini") as c:
        yield c


def test_every_task_returns_a_typed_result(client, server):
    results = [
        client.summarize("The museum reopened after a two-year renovation.", length="1 sentence"),
        client.translate("Der Zug fährt um acht Uhr ab.", to="English"),
        client.answer("Who wrote Hamlet?"),
        client.answer("When does it open?", context="The library opens at nine."),
        client.write_news("Council approves bike lanes; work starts in May; cost 2 million euros."),
        client.generate("summarize", text="Short text.", length="5 words"),
    ]
    for r in results:
        assert r.text and r.backend == "openai" and r.model == "gpt-4o-mini"
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
        assert r.finish_reason == "stop" and r.attempts == 1 and r.latency_s > 0
        assert r.cost_usd is not None and r.cost_usd > 0
    assert server.request_count == len(results)
    billed = server.billed
    assert sum(r.usage.prompt_tokens for r in results) == billed["prompt_tokens"]
    assert sum(r.usage.completion_tokens for r in results) == billed["completion_tokens"]


def test_settings_reach_the_request(client, server):
    client.summarize("Some text to summarize here.", temperature=0.7, max_tokens=50, seed=7)
    body = server.requests[-1].body
    assert body["temperature"] == 0.7 and body["max_tokens"] == 50 and body["seed"] == 7
    assert body["model"] == "gpt-4o-mini"
    client.summarize("Some text to summarize here.")
    assert server.requests[-1].body["temperature"] == 0.3  # the template's default


def test_a_reply_cut_by_the_output_limit_says_so(client):
    result = client.answer("Tell me everything about the history of bridges in Europe and elsewhere.",
                           max_tokens=3)
    assert result.finish_reason == "length" and result.truncated
    assert result.usage.completion_tokens == 3


def test_structured_output_uses_json_schema(client, server):
    result = client.answer("What is the capital of France?", schema=Capital)
    assert isinstance(result.parsed, Capital)
    assert result.response_format == "json_schema"
    rf = server.requests[-1].body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["additionalProperties"] is False
    assert json.loads(result.text) == result.parsed.model_dump()


def test_invalid_output_is_re_asked_and_counted_apart_from_retries(client, server):
    server.enqueue_replies("not json at all", '{"country": "France"}',
                           '{"country": "France", "capital": "Paris", "population_millions": 68.2}')
    result = client.answer("What is the capital of France?", schema=Capital)
    assert result.parsed == Capital(country="France", capital="Paris", population_millions=68.2)
    assert result.reasks == 2 and result.attempts == 3 and result.requests == 3
    assert "not valid" in server.requests[-1].body["messages"][-1]["content"]


def test_output_that_never_validates_raises_after_the_bounded_re_asks(client, server):
    server.enqueue_replies(*["nope"] * 5)
    with pytest.raises(aigc.OutputInvalid) as info:
        client.answer("Capital of France?", schema=Capital)
    assert server.request_count == 3  # the first ask + max_reasks (2)
    assert info.value.text == "nope"


def test_servers_without_json_schema_degrade_to_json_object():
    with FakeOpenAIServer(supports_json_schema=False) as server, \
            aigc.Client(base_url=server.url, api_key=KEY) as client:
        server.enqueue_replies('{"country": "France", "capital": "Paris", "population_millions": 68}')
        result = client.answer("What is the capital of France?", schema=Capital)
        assert result.parsed.capital == "Paris"
        assert result.response_format == "json_object"
        assert any("json_schema" in w for w in result.warnings)
        assert server.requests[-1].body["response_format"] == {"type": "json_object"}
        assert "JSON schema" in server.requests[-1].body["messages"][-1]["content"]


def test_streaming_yields_pieces_that_add_up_to_the_result(client):
    stream = client.summarize("Streaming should deliver the words one piece at a time, in order.", stream=True)
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == stream.result.text
    assert stream.result.usage.completion_tokens > 0 and not stream.result.warnings


def test_streams_without_usage_are_counted_locally_and_flagged():
    with FakeOpenAIServer(stream_usage=False) as server, \
            aigc.Client(base_url=server.url, api_key=KEY, model="gpt-4o-mini") as client:
        stream = client.summarize("Count these tokens for me, please.", stream=True)
        "".join(stream)
        result = stream.result
        assert result.usage.prompt_tokens == server.billed["prompt_tokens"]
        assert result.usage.completion_tokens == server.billed["completion_tokens"]
        assert any("counted locally" in w for w in result.warnings)


async def test_async_streaming(server):
    client = aigc.AsyncClient(base_url=server.url, api_key=KEY)
    try:
        stream = await client.translate("Guten Morgen, wie geht es Ihnen heute?", to="English", stream=True)
        pieces = [p async for p in stream]
        result = await stream.get_result()
    finally:
        await client.aclose()
    assert "".join(pieces) == result.text and result.usage.total_tokens > 0


def test_empty_input_is_refused_before_sending(client, server):
    with pytest.raises(aigc.InputError):
        client.summarize("   \n")
    assert server.request_count == 0


def test_the_fake_backend_scripts_replies_and_failures():
    fake = aigc.FakeBackend()
    fake.enqueue(aigc.ServerError("boom"), "Scripted summary.")
    with aigc.Client(backend=fake, retry=aigc.RetryPolicy(sleep=lambda s: None)) as client:
        result = client.summarize("Anything at all.")
    assert result.text == "Scripted summary." and result.attempts == 2
    assert len(fake.history) == 2 and "Anything at all." in fake.history[0].messages[-1].content


def test_client_map_runs_many_inputs():
    fake = aigc.FakeBackend()
    with aigc.Client(backend=fake) as client:
        results = client.map("summarize", ["First text.", "Second text.", "Third text."])
        translations = client.map("translate", [{"text": "Hallo", "to": "en"}, {"text": "Ciao", "to": "en"}])
    assert [r.task for r in results] == ["summarize"] * 3
    assert len(translations) == 2 and len(fake.history) == 5


def test_module_level_functions_use_the_configured_default():
    fake = aigc.FakeBackend().enqueue("Done.")
    aigc.configure(backend=fake)
    try:
        assert aigc.summarize("Some text.").text == "Done."
        assert aigc.get_client().backend is fake
    finally:
        aigc.configure(backend=aigc.FakeBackend())


# -- configuration ------------------------------------------------------------------------------------

def test_precedence_explicit_over_file_over_env(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('model = "from-file"\ntemperature = 0.1\n')
    env = {"AIGC_MODEL": "from-env", "AIGC_TEMPERATURE": "0.5", "AIGC_MAX_TOKENS": "77",
           "OPENAI_API_KEY": KEY}
    s = load_settings({"model": "explicit"}, env=env, config_file=config)
    assert (s.model, s.temperature, s.max_output_tokens) == ("explicit", 0.1, 77)  # AIGC_MAX_TOKENS: its old name
    assert s.key == KEY and s.resolved_backend() == "openai"
    assert load_settings({}, env={}, config_file=tmp_path / "none.toml").resolved_backend() == "local"


@pytest.mark.parametrize("content, message", [
    ("temperature = [", "not valid TOML"),
    ("colour = 'blue'", "unknown setting 'colour'"),
    ("temperature = 9", "invalid setting temperature"),
])
def test_bad_config_files_are_clear_errors(tmp_path, content, message):
    config = tmp_path / "config.toml"
    config.write_text(content)
    with pytest.raises(aigc.ConfigError, match=message):
        load_settings({}, env={}, config_file=config)


def test_the_key_never_shows_in_reprs_or_results(client):
    assert KEY not in repr(client.settings) and KEY not in repr(client)
    assert KEY not in client.summarize("Some words.").model_dump_json()


def test_openai_backend_without_a_key_says_what_to_do():
    with pytest.raises(aigc.ConfigError, match="OPENAI_API_KEY"):
        aigc.Client(backend="openai")
