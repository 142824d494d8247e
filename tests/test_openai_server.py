"""The test server behaves like the OpenAI API as the real SDK sees it.

Every hosted-path test leans on this server, so its shapes, counts and failures are checked here with the
real ``openai`` client (no retries) before anything else trusts them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import openai
import pydantic
import pytest

from aigc.tokens import get_encoding
from tests.openai_server import FakeOpenAIServer, Fault, ServerProcess

HELLO = [{"role": "user", "content": "Say hello to the whole wide world in one short and friendly sentence please"}]


@contextmanager
def running(**options):
    """A started server and an SDK client on it, both closed afterwards."""
    with FakeOpenAIServer(**options) as server, client_for(server) as client:
        yield server, client


@contextmanager
def client_for(server, api_key="sk-test", **options):
    with openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0, **options) as client:
        yield client


@pytest.fixture
def server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def client(server):
    with client_for(server) as client:
        yield client


def ask(client, content="hello", **params):
    return client.chat.completions.create(
        model=params.pop("model", "gpt-4o-mini"), messages=[{"role": "user", "content": content}], **params
    )


def expected_prompt_tokens(encoding_name, messages):
    """OpenAI's published chat formula, written out independently of the server."""
    encoding = get_encoding(encoding_name)
    total = 3
    for message in messages:
        total += 3 + sum(len(encoding.encode(value)) for value in message.values())
        total += 1 if "name" in message else 0
    return total


# ---- shapes ---------------------------------------------------------------------------------------------------


def test_a_completion_parses_with_usage_and_a_request_id(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    completion = raw.parse()
    reply = "Reply: Say hello to the whole wide world in one short and friendly"
    assert completion.choices[0].message.content == reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len(get_encoding("o200k_base").encode(reply))
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert re.fullmatch(r"req_\d+", raw.headers["x-request-id"])


def test_a_stream_carries_the_reply_and_a_final_usage_chunk(server, client):
    chunks = list(ask(client, "one two three", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Reply: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert server.billed == {
        "prompt_tokens": chunks[-1].usage.prompt_tokens,
        "completion_tokens": chunks[-1].usage.completion_tokens,
    }


def test_a_server_without_stream_usage_never_sends_it():
    with running(stream_usage=False) as (server, client):
        chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
        assert chunks and all(c.usage is None and c.choices for c in chunks)
        assert server.billed["completion_tokens"] > 0  # the server still bills what it generated


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("gpt-4o-mini", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-4", "cl100k_base"), ("llama3", "cl100k_base")],
)
def test_prompt_tokens_follow_the_chat_formula(client, model, encoding):
    messages = [
        {"role": "system", "content": "You summarise news for busy readers."},
        {"role": "user", "name": "ana", "content": "Résumé: the council approved the budget — 12 votes to 3."},
    ]
    completion = client.chat.completions.create(model=model, messages=messages)
    assert completion.usage.prompt_tokens == expected_prompt_tokens(encoding, messages)


def test_max_tokens_cuts_the_reply_and_reports_length(server, client):
    server.enqueue_replies("The quick brown fox jumps over the lazy dog again and again.")
    completion = ask(client, max_tokens=3)
    encoding = get_encoding("o200k_base")
    cut = encoding.decode(encoding.encode("The quick brown fox jumps over the lazy dog again and again.")[:3])
    assert completion.choices[0].message.content == cut
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_scripted_replies_come_first_then_the_callable():
    with running(reply=lambda body: "called " + body["model"]) as (server, client):
        server.enqueue_replies("first", "second")
        replies = [ask(client).choices[0].message.content for _ in range(3)]
        assert replies == ["first", "second", "called gpt-4o-mini"]


class Place(pydantic.BaseModel):
    city: str
    population: int


class Summary(pydantic.BaseModel):
    title: str
    score: float
    published: bool
    tags: list[str]
    place: Place
    note: str | None


def test_a_json_schema_format_gets_a_minimal_valid_instance(client):
    completion = client.chat.completions.parse(model="gpt-4o-mini", messages=HELLO, response_format=Summary)
    parsed = completion.choices[0].message.parsed
    assert parsed == Summary(title="example", score=0, published=False, tags=[],
                             place=Place(city="example", population=0), note="example")


def test_json_object_format_gets_json(client):
    completion = ask(client, "hi", response_format={"type": "json_object"})
    assert json.loads(completion.choices[0].message.content) == {"reply": "Reply: hi"}


def test_a_server_without_json_schema_rejects_it():
    with running(supports_json_schema=False) as (server, client):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.parse(model="gpt-4o-mini", messages=HELLO, response_format=Summary)
        assert caught.value.param == "response_format"
        assert caught.value.message.endswith("response_format json_schema is not supported by this server")
        assert ask(client, response_format={"type": "json_object"}).choices


def test_logprobs_cover_every_token_with_the_asked_alternatives(server, client):
    server.logprob = lambda token: -0.25
    answer = ask(client, "count the tokens of this reply", logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    assert all(t.logprob == -0.25 and len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
               for t in content)
    assert ask(client).choices[0].logprobs is None  # only when asked
    server.supports_logprobs = False
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        ask(client, logprobs=True)


def test_moderations_score_by_the_scripted_rules_one_result_per_input(server, client):
    server.flag("knife", violence=0.91, self_harm_intent=0.2)
    answer = client.moderations.create(model="omni-moderation-latest", input=["a knife", "a spoon"])
    flagged, fine = answer.results
    assert flagged.flagged and flagged.categories.violence and flagged.category_scores.violence == 0.91
    assert flagged.category_scores.self_harm_intent == 0.2 and not flagged.categories.self_harm_intent
    assert not fine.flagged and fine.category_scores.violence < 0.01
    assert [r.body["input"] for r in server.requests] == [["a knife", "a spoon"]]
    server.enqueue_faults(Fault(status=503))
    with pytest.raises(openai.InternalServerError):
        client.moderations.create(input="a spoon")


def test_models_are_listed():
    with running(context_windows={"gpt-4": 8192}) as (server, client):
        assert sorted(m.id for m in client.models.list()) == ["gpt-4", "gpt-4o-mini"]


# ---- failures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(status=400), openai.BadRequestError),
        (Fault(status=403), openai.PermissionDeniedError),
        (Fault(status=404), openai.NotFoundError),
        (Fault(status=408), openai.APIStatusError),
        (Fault(status=409), openai.ConflictError),
        (Fault(status=422), openai.UnprocessableEntityError),
        (Fault.server_error(500), openai.InternalServerError),
        (Fault.server_error(502), openai.InternalServerError),
        (Fault.server_error(503), openai.InternalServerError),
        (Fault.quota(), openai.RateLimitError),
    ],
)
def test_a_fault_status_raises_the_matching_sdk_error(server, client, fault, error):
    server.enqueue_faults(fault)
    with pytest.raises(error) as caught:
        ask(client)
    assert caught.value.status_code == fault.status
    assert caught.value.message and caught.value.type
    assert ask(client).choices  # the fault was used up
    assert server.stats["errors_by_status"] == {fault.status: 1}


def test_a_rate_limit_fault_carries_retry_headers(server, client):
    server.enqueue_faults(Fault.rate_limit(retry_after=1.5), Fault.rate_limit(retry_after_ms=200))
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1.5"
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "other")
    assert caught.value.response.headers["retry-after-ms"] == "200"
    assert server.stats["rate_limited"] == 2


def test_a_quota_fault_is_told_apart_from_a_rate_limit(server, client):
    server.enqueue_faults(Fault.quota())
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.code == "insufficient_quota" and "quota" in caught.value.message
    assert "retry-after" not in caught.value.response.headers


def test_a_dropped_connection_is_a_connection_error(server, client):
    server.enqueue_faults(Fault.dropped())
    with pytest.raises(openai.APIConnectionError) as caught:
        ask(client)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert server.stats["dropped"] == 1 and server.requests[-1].status is None


def test_a_stall_longer_than_the_client_timeout_is_a_timeout(server, client):
    server.enqueue_faults(Fault.stalled(5))
    with pytest.raises(openai.APITimeoutError):
        ask(client, timeout=0.2)


def test_a_stream_can_be_cut_after_some_chunks(server, client):
    server.enqueue_faults(Fault.stream_cut(2))
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in ask(client, "one two three four five", stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Reply: ", "one "]
    assert server.stats["dropped"] == 1 and server.billed == {"prompt_tokens": 0, "completion_tokens": 0}


def test_a_wrong_key_is_rejected_without_echoing_it():
    with FakeOpenAIServer(api_key="sk-right") as server:
        with client_for(server, api_key="sk-wrong-secret-123") as client, pytest.raises(
            openai.AuthenticationError
        ) as caught:
            ask(client)
        assert caught.value.code == "invalid_api_key"
        assert "secret" not in str(caught.value) and "secret" not in json.dumps(caught.value.body)
        with client_for(server, api_key="sk-right") as client:
            assert ask(client).choices
        assert all("authorization" not in {k.lower() for k in r.headers} for r in server.requests)


def test_an_oversized_request_gets_openais_context_error():
    with running(context_windows={"gpt-4o-mini": 40}) as (server, client):
        with pytest.raises(openai.BadRequestError) as caught:
            ask(client, "word " * 30, max_tokens=10)
        prompt = expected_prompt_tokens("o200k_base", [{"role": "user", "content": "word " * 30}])
        assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
        assert caught.value.message.endswith(
            f"This model's maximum context length is 40 tokens. However, you requested {prompt + 10} tokens "
            f"({prompt} in the messages, 10 in the completion). Please reduce the length of the messages or "
            "completion."
        )
        assert server.oversize_rejections == 1 and server.stats["oversize_rejections"] == 1


def test_fail_next_and_random_faults_are_reproducible():
    def outcomes(seed):
        with running(error_rate=0.4, drop_rate=0.2, seed=seed) as (server, client):
            result = []
            for n in range(15):
                try:
                    ask(client, f"question {n}")
                    result.append("ok")
                except openai.InternalServerError:
                    result.append("500")
                except openai.APIConnectionError:
                    result.append("drop")
            return result

    first = outcomes(7)
    assert first == outcomes(7) and {"ok", "500", "drop"} <= set(first)
    with running() as (server, client):
        server.fail_next(2, Fault.server_error(502))
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                ask(client)
        assert ask(client).choices


def test_a_failing_reply_callable_is_a_500_not_a_hang_up():
    with running(reply=lambda body: 1 / 0) as (server, client), pytest.raises(
        openai.InternalServerError, match="ZeroDivisionError"
    ):
        ask(client)


def test_malformed_json_and_unknown_paths_answer_in_openais_shape(server):
    host, port = server.url.removeprefix("http://").removesuffix("/v1").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for method, path, body, status, message in [
            ("POST", "/v1/chat/completions", b"{not json", 400, "We could not parse"),
            ("GET", "/v1/nothing/here", None, 404, "Invalid URL (GET /v1/nothing/here)"),
        ]:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            error = json.loads(response.read())["error"]
            assert response.status == status and error["message"].startswith(message)
            assert set(error) == {"message", "type", "param", "code"}
    finally:
        connection.close()


# ---- concurrency, limits and counting -------------------------------------------------------------------------


def test_latency_overlaps_across_parallel_requests():
    with running(latency=0.3) as (server, client):
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: ask(client, f"q{n}"), range(8)))
        assert 0.3 <= time.monotonic() - started < 1.0
        assert server.stats["ok"] == 8


async def test_the_async_client_streams_many_requests_at_once():
    with FakeOpenAIServer(latency=0.2) as server:
        async with openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0) as client:

            async def one(n):
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"n {n}"}], stream=True
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream])

            replies = await asyncio.gather(*(one(n) for n in range(30)))
        assert replies == [f"Reply: n {n}" for n in range(30)] and server.stats["ok"] == 30


def test_requests_per_minute_bind_within_a_second():
    with running(rpm=120) as (server, client):  # two requests per second
        ask(client, "a")
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        assert raw.headers["x-ratelimit-limit-requests"] == "120"
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "c")
        headers = caught.value.response.headers
        assert caught.value.code == "rate_limit_exceeded"
        assert 0 < int(headers["retry-after-ms"]) <= 1000 and headers["retry-after"] == "1"
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "c")  # the same request again, before it was allowed back
        assert server.stats["resent_early"] == 1
        time.sleep(int(caught.value.response.headers["retry-after-ms"]) / 1000)
        assert ask(client, "c").choices
        assert server.stats["rate_limited"] == 2 and server.stats["resent_early"] == 1


def test_tokens_per_minute_count_prompt_and_max_tokens():
    with running(tpm=3000) as (server, client):  # 50 tokens per second
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=30
        )
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(3000 - raw.parse().usage.prompt_tokens - 30)
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "again", max_tokens=30)
        assert "retry-after-ms" in caught.value.response.headers
        assert ask(client, "small").choices  # ~10 tokens still fit in this second


def test_duplicates_count_repeated_successful_bodies(server, client):
    ask(client, "same")
    ask(client, "same")
    ask(client, "different")
    assert server.stats["duplicates"] == 1 and server.stats["ok"] == 3 and server.request_count == 3
    recorded = server.requests[0]
    assert recorded.path == "/v1/chat/completions" and recorded.body["messages"][0]["content"] == "same"
    server.reset()
    assert server.request_count == 0 and server.requests == [] and server.billed["prompt_tokens"] == 0


def test_stop_is_prompt_even_with_a_stalled_request():
    server = FakeOpenAIServer().start()
    server.enqueue_faults(Fault.stalled(30))
    errors = []

    def call():
        with client_for(server) as client:
            try:
                ask(client)
            except openai.APIConnectionError as err:
                errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    while server.request_count == 0:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    thread.join(5)
    assert time.monotonic() - started < 2 and len(errors) == 1


# ---- batches --------------------------------------------------------------------------------------------------


def batch_line(custom_id, body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_a_batch_runs_end_to_end_through_the_sdk(server, client):
    lines = [
        batch_line("a", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "first"}]}),
        batch_line("b", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "second"}]}),
        batch_line("bad", {"model": "gpt-4o-mini"}),
        "{not json",
    ]
    upload = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    assert client.files.content(upload.id).text == "\n".join(lines)
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "validating"
    assert client.batches.retrieve(batch.id).status == "in_progress"
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 2, 2)
    output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["a", "b"]
    assert output[0]["response"]["status_code"] == 200 and output[0]["error"] is None
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "Reply: first"
    errors = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "bad" and errors[0]["response"]["status_code"] == 400
    assert errors[1]["error"]["code"] == "invalid_json_line"
    assert server.stats["batches_created"] == 1
    assert client.files.delete(upload.id).deleted
    assert server.billed["prompt_tokens"] == sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in output)


def test_a_batch_can_be_cancelled(client):
    line = batch_line("a", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    upload = client.files.create(file=("in.jsonl", line.encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    assert client.batches.retrieve(batch.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


# ---- as a separate process ------------------------------------------------------------------------------------


def test_the_server_runs_as_a_process_scripted_over_http():
    with ServerProcess("--api-key", "sk-test") as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", server.url)
        server.control("faults", [{"status": 429, "retry_after": 0.2, "code": "rate_limit_exceeded"}])
        server.control("replies", ["scripted"])
        with openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0) as client:
            with pytest.raises(openai.RateLimitError):
                ask(client)
            assert ask(client).choices[0].message.content == "scripted"
        stats = server.control("stats")
        assert stats["stats"]["rate_limited"] == 1 and stats["stats"]["ok"] == 1
        assert stats["billed"]["completion_tokens"] == len(get_encoding("o200k_base").encode("scripted"))
        server.reset()
        assert server.stats["requests"] == 0
    assert server.process.returncode == 0  # SIGTERM ends it cleanly
