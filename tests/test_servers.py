"""Any OpenAI-compatible server, for real: each test server dialect copies one behaviour of a real server
(llama-cpp-python, ``transformers serve``, vLLM, LiteLLM, Ollama, llama.cpp) and aigc must cope with it."""

from __future__ import annotations

import json

import pydantic
import pytest

import aigc
from aigc.cli import main
from tests.openai_server import Dialect, FakeOpenAIServer, Fault

KEY = "sk-test-servers"


class Capital(pydantic.BaseModel):
    country: str
    capital: str
    population_millions: float


def client_for(server, **kw):
    return aigc.Client(base_url=server.url, api_key=KEY, **kw)


def chats(server):
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


# ---- structured output that degrades ------------------------------------------------------------------


def test_a_json_schema_500_steps_down_to_json_object_once_per_server(tmp_path):
    """llama-cpp-python answers json_schema with an HTTP 500: one refusal, then json_object for good."""
    with FakeOpenAIServer(dialect=Dialect.llama_cpp_python()) as server:
        with client_for(server) as client:
            result = client.answer("What is the capital of France?", schema=Capital)
            assert isinstance(result.parsed, Capital) and result.response_format == "json_object"
            assert server.stats["errors_by_status"] == {500: 1} and server.request_count == 2  # no retries
            sent = chats(server)[-1].body
            assert sent["response_format"]["type"] == "json_object"
            assert "population_millions" in sent["response_format"]["schema"]["properties"]  # llama.cpp's extension
            assert '"population_millions"' in sent["messages"][-1]["content"]  # the schema is in the prompt
            client.answer("And of Spain?", schema=Capital)
        with client_for(server) as client:  # another client of this process
            client.answer("And of Italy?", schema=Capital)
        from aigc.backends.openai.capabilities import CapabilityStore

        CapabilityStore.forget()  # a new process: the cache dir remembers
        with client_for(server) as client:
            client.answer("And of Peru?", schema=Capital)
        assert server.stats["errors_by_status"] == {500: 1} and server.request_count == 5


def test_a_server_that_refuses_the_schema_in_json_object_gets_plain_json_object():
    with FakeOpenAIServer(dialect=Dialect(json_schema="400", object_schema=False)) as server, \
            client_for(server) as client:
        result = client.answer("What is the capital of France?", schema=Capital)
        assert isinstance(result.parsed, Capital) and result.response_format == "json_object"
        assert server.stats["errors_by_status"] == {400: 2}
        assert chats(server)[-1].body["response_format"] == {"type": "json_object"}
        client.answer("And of Spain?", schema=Capital)
        assert server.stats["errors_by_status"] == {400: 2}


def test_a_server_that_ignores_response_format_still_gets_the_schema():
    """transformers serve accepts json_schema and ignores it: the schema must be in the prompt."""
    with FakeOpenAIServer(dialect=Dialect.transformers_serve()) as server, client_for(server) as client:
        result = client.answer("What is the capital of France?", schema=Capital)
        assert isinstance(result.parsed, Capital)
        assert result.response_format == "prompt"  # nothing was enforced: the answer came from the prompt
        assert any("did not enforce" in w for w in result.warnings)
        assert "JSON schema" in chats(server)[0].body["messages"][-1]["content"]
        client.answer("And of Spain?", schema=Capital)
        assert "response_format" not in chats(server)[-1].body  # learned: not asked for again


def test_re_asks_restate_the_schema(tmp_path):
    with FakeOpenAIServer(dialect=Dialect.transformers_serve()) as server, client_for(server) as client:
        server.enqueue_replies('{"country": "France"}', '{"country": "France", "capital": "Paris", '
                                                        '"population_millions": 68.2}')
        result = client.answer("What is the capital of France?", schema=Capital)
        assert result.reasks == 1 and result.parsed.capital == "Paris"
        reask = chats(server)[-1].body["messages"][-1]["content"]
        assert "not valid" in reask and '"population_millions"' in reask


def test_a_verified_json_schema_server_says_so(tmp_path):
    with FakeOpenAIServer() as server, client_for(server) as client:
        result = client.answer("What is the capital of France?", schema=Capital)
        assert result.response_format == "json_schema" and not result.warnings
        body = chats(server)[-1].body
        assert body["response_format"]["type"] == "json_schema"


# ---- context windows learned from the server ----------------------------------------------------------

WORDS = ["river", "bridge", "council", "harbour", "festival", "library", "museum", "tram", "market", "school"]


def document(paragraphs: int) -> str:
    return "\n\n".join(" ".join(WORDS[(p + i) % len(WORDS)] for i in range(60)).capitalize() + "."
                       for p in range(paragraphs))


def test_a_window_named_only_in_the_400_is_learned_and_the_split_re_planned():
    """A model the table does not know gets 8,192 tokens until the server's 400 names 2,048: aigc re-plans
    the split and the call completes; the next call fits from the start."""
    doc = document(60)  # ~4,000 tokens: one request for an 8,192 window, too long for 2,048
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}) as server, \
            client_for(server, model="tiny-chat") as client:
        result = client.summarize(doc)
        assert result.text and server.oversize_rejections == 1
        assert any("split" in w for w in result.warnings)
        assert client.context_window() == 2048
        server.reset()
        client.summarize(doc + "\n\nOne more paragraph.")
        assert server.oversize_rejections == 0


async def test_the_async_client_re_plans_too():
    doc = document(60)
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}) as server:
        async with aigc.AsyncClient(base_url=server.url, api_key=KEY, model="tiny-chat") as client:
            results = await client.map("summarize", [doc, doc + "\n\nAnd one more."])
            assert all(isinstance(r, aigc.Result) and r.text for r in results)
            stream = await client.summarize(doc + "\n\nA third.", stream=True)
            assert "".join([piece async for piece in stream]) == stream.result.text
        assert server.oversize_rejections >= 1


def test_a_map_over_many_inputs_re_plans_each_one():
    doc = document(60)
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}) as server, \
            client_for(server, model="tiny-chat") as client:
        results = client.map("summarize", [doc, doc + "\n\nAnd one more.", "A short one."])
        assert all(isinstance(r, aigc.Result) and r.text for r in results)


def test_litellm_wraps_the_window_error_and_it_is_still_learned():
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}, dialect=Dialect.litellm()) as server, \
            client_for(server, model="tiny-chat") as client:
        result = client.summarize(document(60))
        assert result.text and server.oversize_rejections == 1 and client.context_window() == 2048


@pytest.mark.parametrize("where", ["models", "props", "show"])
def test_a_window_the_server_advertises_is_used_before_anything_is_sent(where):
    """vLLM's /v1/models, llama.cpp's /props and Ollama's /api/show name the window: no refusal at all."""
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}, dialect=Dialect(window_in=where)) as server, \
            client_for(server, model="tiny-chat") as client:
        assert client.context_window() == 2048
        client.summarize(document(60))
        assert server.oversize_rejections == 0 and server.request_count > 1


def test_a_model_folder_given_as_the_model_name_declares_its_window(tmp_path):
    """transformers serve takes a folder as the model name: its config.json says how long the model reads."""
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"max_position_embeddings": 1024}')
    with FakeOpenAIServer(dialect=Dialect.transformers_serve()) as server, \
            client_for(server, model=str(folder)) as client:
        assert client.context_window() == 1024
        result = client.summarize(document(30))
        assert result.text and server.oversize_rejections == 0 and result.requests > 1


def test_a_tokenizer_counting_more_than_tiktoken_is_counted_by_the_server():
    """vLLM with a tokenizer counting 1.3x tiktoken and a /tokenize endpoint: aigc's counts are the server's."""
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}, dialect=Dialect.vllm()) as server, \
            client_for(server, model="tiny-chat") as client:
        text = document(3)
        raw = aigc.tokens.count_text(text, "gpt-4o")
        assert client.count_tokens(text) == -(-raw * 13 // 10)  # ceil(1.3 x tiktoken), as the server counts
        result = client.summarize(document(60))
        assert result.text and server.oversize_rejections == 0
        assert server.stats["tokenize"] > 0
        for r in chats(server):
            assert r.status == 200


def test_without_a_tokenize_endpoint_the_answers_calibrate_the_margin():
    """A 1.3x tokenizer, no /tokenize, the window only in the 400 text: the first refusal teaches the window
    and the server's count, and every later request fits."""
    dialect = Dialect(token_scale=1.3)
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}, dialect=dialect) as server, \
            client_for(server, model="tiny-chat") as client:
        result = client.summarize(document(120))
        statuses = [r.status for r in chats(server)]
        assert result.text and 400 in statuses
        assert max(i for i, s in enumerate(statuses) if s == 400) < statuses.index(200)  # only the first step
        server.reset()
        client.translate(document(40), to="German")
        client.summarize(document(200))
        assert server.oversize_rejections == 0


def test_the_right_window_in_a_models_file_and_a_tokenizer_that_counts_more(tmp_path, monkeypatch):
    """The window is right but tiktoken undercounts (the server's tokenizer counts 1.3x): the first refusal
    names the server's count, aigc learns the ratio and re-plans, and later calls fit from the start."""
    models = tmp_path / "models.toml"
    models.write_text('[models.smollm2]\ncontext_window = 2048\nmax_output_tokens = 1024\n')
    monkeypatch.setenv("AIGC_MODELS_FILE", str(models))
    with FakeOpenAIServer(context_windows={"smollm2": 2048}, dialect=Dialect(token_scale=1.3)) as server, \
            client_for(server, model="smollm2") as client:
        assert client.summarize(document(150)).text
        assert server.oversize_rejections >= 1  # tiktoken's count was too low, once
        server.reset()
        assert client.summarize(document(150) + "\n\nMore.").text
        assert server.oversize_rejections == 0


def test_a_request_that_cannot_be_split_still_fails_clearly():
    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}) as server, \
            client_for(server, model="tiny-chat") as client:
        with pytest.raises(aigc.ContextLengthExceeded) as caught:
            client.chat([{"role": "user", "content": document(60)}])
        assert "2048" in str(caught.value)
        assert server.oversize_rejections == 1  # learned once; the re-plans were stopped before sending


# ---- a model name that is also a local model -------------------------------------------------------------


@pytest.mark.parametrize("model", ["SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_a_local_model_name_on_a_compatible_server_is_counted_not_refused(model, capsys):
    """Streams, dry runs and `aigc tokens` work: the model's tokenizer (when installed), the server's
    /tokenize, or an estimate with a margin — never an error after the answer."""
    with FakeOpenAIServer(context_windows={model: 8192}) as server:
        args = ["--base-url", server.url, "--model", model]
        doc = document(4)
        for argv in (["summarize", "-", "--stream", *args], ["summarize", "-", "--dry-run", *args],
                     ["tokens", "-", *args]):
            with pytest.raises(SystemExit) as info:
                _run(argv, doc)
            assert info.value.code == 0, capsys.readouterr().err
        assert capsys.readouterr().err.count("error") == 0


def _run(argv, stdin):
    import io
    import sys

    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        main(argv)
    finally:
        sys.stdin = old


# ---- errors that say what the server said -----------------------------------------------------------------


def test_fastapi_style_errors_show_the_servers_reason():
    dialect = Dialect(errors="fastapi", pinned="/models/SmolLM2-135M-Instruct")
    with FakeOpenAIServer(dialect=dialect) as server, client_for(server, model="smollm2") as client:
        with pytest.raises(aigc.BadRequest) as caught:
            client.summarize("Some text.")
        message = str(caught.value)
        assert "Server is pinned to '/models/SmolLM2-135M-Instruct'; requested 'smollm2'" in message
        assert "\n" not in message


def test_multi_line_gateway_errors_are_folded_into_one_line():
    with FakeOpenAIServer(dialect=Dialect.litellm()) as server, client_for(server) as client:
        server.enqueue_faults(Fault(status=400, message="Invalid model name\nReceived Model Group=x"))
        with pytest.raises(aigc.BadRequest) as caught:
            client.summarize("Some text.")
        assert "\n" not in str(caught.value) and "Invalid model name Received Model Group=x" in str(caught.value)


def test_streamed_usage_relayed_by_litellm_is_marked_as_possibly_estimated():
    """LiteLLM sends a usage chunk even when the server behind it sent none (it counts with its own
    tokenizer) and does not say which: the result says so rather than passing it off as the server's."""
    with FakeOpenAIServer(dialect=Dialect.litellm(), stream_usage=False) as server, client_for(server) as client:
        stream = client.summarize("Rivers and bridges of old towns, and the markets beside them.", stream=True)
        assert "".join(stream) == stream.result.text
        assert stream.result.usage.prompt_tokens > 0
        assert any("LiteLLM" in w and "estimate" in w for w in stream.result.warnings)


@pytest.mark.parametrize(("status", "code", "message", "body", "expected"), [
    (400, "context_length_exceeded", "This model's maximum context length is 2048 tokens. However, you "
     "requested 5214 tokens (5000 in the messages, 214 in the completion).", {}, (2048, 5000)),
    (400, "400", "litellm.ContextWindowExceededError: litellm.BadRequestError: ContextWindowExceededError: "
     "OpenAIException - This model's maximum context length is 4096 tokens.", {}, (4096, None)),
    (400, None, "the request exceeds the available context size, try increasing it",
     {"error": {"type": "exceed_context_size_error", "n_ctx": 2048, "n_prompt_tokens": 2311}}, (2048, 2311)),
    (500, None, "Requested tokens (3100) exceed context window of 2048", {}, (2048, 3100)),
    (400, None, "This model's maximum context length is 8192 tokens and your request has 9000 input tokens",
     {}, (8192, 9000)),
    (400, None, "response_format json_schema is not supported", {}, None),
    (500, None, "CUDA out of memory", {}, None),
])
def test_context_length_refusals_are_recognised_however_worded(status, code, message, body, expected):
    from aigc.backends.openai.errors import context_error

    assert context_error(status, code, message, body) == expected


def test_an_answer_clamped_by_the_window_says_so_not_raise_the_cap(capsys):
    """llama-cpp-python cuts the answer to what the prompt leaves of the window: raising the cap cannot help."""
    dialect = Dialect(clamp=True)
    with FakeOpenAIServer(context_windows={"gpt-4o-mini": 250}, dialect=dialect,
                          reply=lambda body: "word " * 200) as server:
        with client_for(server) as client:
            result = client.summarize("A short text about rivers and bridges in old towns.", max_output_tokens=240)
        assert result.truncated and result.cut_by == "context_window"
        with pytest.raises(SystemExit):
            _run(["summarize", "-", "--base-url", server.url, "--max-output-tokens", "240"],
                 "A short text about rivers and bridges in old towns.")
        err = capsys.readouterr().err
        assert "the prompt filled the model's context window" in err and "raise --max-output-tokens" not in err


def test_an_answer_cut_by_its_own_cap_still_says_raise_it():
    with FakeOpenAIServer() as server, client_for(server) as client:
        result = client.answer("Tell me everything about bridges.", max_output_tokens=3)
        assert result.truncated and result.cut_by == "max_output_tokens"


# ---- local servers: streamed internally, one part at a time -----------------------------------------------


def test_a_local_server_is_streamed_so_the_timeout_counts_from_the_last_token(monkeypatch):
    """A slow local model: the whole answer takes longer than the timeout, each token does not."""
    monkeypatch.delenv("AIGC_LOCAL_SERVER")  # decide from the address: 127.0.0.1 is local
    reply = "one two three four five six seven eight nine ten"
    with FakeOpenAIServer(token_delay=0.15, reply=lambda body: reply) as server:
        with client_for(server, timeout=0.8, max_attempts=1) as client:
            assert client.engine.concurrency == 1
            result = client.answer("Count to ten.")
            assert result.text == reply and result.usage.completion_tokens > 0
        assert chats(server)[-1].body["stream"] is True
        monkeypatch.setenv("AIGC_LOCAL_SERVER", "false")  # the hosted way: one plain request, one deadline
        with client_for(server, timeout=0.8, max_attempts=1) as client, pytest.raises(aigc.RequestTimeout):
            client.answer("Count to ten.")


def test_a_stream_refused_in_silence_is_asked_again_plainly_to_hear_why(monkeypatch):
    """llama-cpp-python answers a streamed request whose prompt is too long with a 200 and an empty stream:
    aigc asks once without streaming, hears the 400 and its window, and re-plans."""
    monkeypatch.delenv("AIGC_LOCAL_SERVER")  # 127.0.0.1: every request is streamed
    with FakeOpenAIServer(context_windows={"smollm2": 2048}, dialect=Dialect.llama_cpp_python()) as server, \
            client_for(server, model="smollm2") as client:
        result = client.summarize(document(60))
        assert result.text and client.context_window() == 2048
        refused = [r for r in chats(server) if r.status == 400]
        assert len(refused) == 1 and not refused[0].body.get("stream")  # the plain re-ask heard it
        stream = client.summarize(document(61), stream=True)
        assert "".join(stream) == stream.result.text and stream.result.text


def test_behind_litellm_the_silent_refusal_is_an_empty_stop_and_still_heard(monkeypatch):
    monkeypatch.delenv("AIGC_LOCAL_SERVER")
    dialect = Dialect(json_schema="500", errors="litellm", silent_stream_errors=True)
    with FakeOpenAIServer(context_windows={"smollm2": 2048}, dialect=dialect) as server, \
            client_for(server, model="smollm2") as client:
        result = client.summarize(document(60))
        assert result.text and client.context_window() == 2048


def test_an_explicit_concurrency_wins_over_the_local_default(monkeypatch):
    monkeypatch.delenv("AIGC_LOCAL_SERVER")
    with FakeOpenAIServer() as server, client_for(server, concurrency=3) as client:
        assert client.engine.concurrency == 3


# ---- aigc doctor asks the server ----------------------------------------------------------------------------


def test_doctor_probes_the_base_url(capsys, monkeypatch):
    from aigc.backends.openai.discovery import check_server

    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        with pytest.raises(SystemExit):
            main(["doctor", "--json"])
        report = json.loads(capsys.readouterr().out)
        openai_status = next(b for b in report["backends"] if b["name"] == "openai")
        assert openai_status["usable"] and "gpt-4o-mini" in openai_status["note"]
        ok, _, note = check_server(server.url.removesuffix("/v1"), None)  # the usual slip: no /v1
        assert not ok and "404" in note and note.endswith(f"try base_url {server.url}")
        url = server.url
    ok, _, note = check_server(url, None)  # stopped: nothing answers there now
    assert not ok and "does not answer" in note


# ---- the whole way: a 300-page book on a small server with another tokenizer -------------------------------


@pytest.mark.slow
def test_a_300_page_book_on_a_2048_token_server_with_another_tokenizer():
    """vLLM-like: a 2,048-token window (named in /v1/models), a tokenizer counting 1.3x tiktoken, /tokenize.
    Summarized, translated and asked about: every request fits (the server would refuse one that does not),
    and all three complete."""
    from tests.test_longdoc import BOOK

    def reply(body):  # a "translation" that keeps the text checkable: the source itself
        content = body["messages"][-1]["content"]
        if "Translate the text above" in content:
            return content.rsplit("\n\nTranslate the text above", 1)[0]
        return None

    with FakeOpenAIServer(context_windows={"tiny-chat": 2048}, dialect=Dialect.vllm(), reply=reply) as server, \
            client_for(server, model="tiny-chat") as client:
        assert client.context_window() == 2048 and client.count_tokens(BOOK) > 100 * 2048
        summary = client.summarize(BOOK)
        assert summary.text and summary.requests > 100
        translation = client.translate(BOOK, to="English")
        assert translation.text == BOOK and translation.requests > 100
        needle = "The lighthouse keeper's cat is named Marmalade and sleeps on the lantern gallery."
        answer = client.answer("What is the lighthouse keeper's cat called?",
                               context=BOOK[:200_000] + "\n\n" + needle + "\n\n" + BOOK[200_000:])
        assert "Marmalade" in chats(server)[-1].body["messages"][-1]["content"] and answer.text
        assert server.oversize_rejections == 0
        assert all(r.status == 200 for r in chats(server))
