"""``aigc serve`` over the fake backend: the OpenAI API as the official SDK sees it, keys, budgets, limits,
the queue bound, disconnects and the operational endpoints. Real uvicorn on 127.0.0.1, real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx2
import openai
import pytest
from pydantic import BaseModel

from aigc.backends.fake import FakeBackend
from aigc.config import load_settings
from aigc.ledger import Ledger
from tests.serving import KeyStore, ServeOptions, SlowFake, ask, async_sdk, metric, sdk, serving


def test_chat_completion_as_the_sdk_sees_it():
    fake = FakeBackend()
    with serving(fake) as server:
        client = sdk(server)
        assert [m.id for m in client.models.list()] == ["fake-model"]
        raw = client.chat.completions.with_raw_response.create(model="fake-model",
                                                               messages=ask("Tell me about the sea"))
        reply = raw.parse()
        assert reply.choices[0].message.content == "Fake reply: Tell me about the sea"
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage.prompt_tokens == fake.count_tokens(fake.history[-1].messages, "fake-model")
        assert reply.usage.completion_tokens == fake.count_text(reply.choices[0].message.content, "")
        assert raw.headers["x-aigc-backend"] == "fake"
        assert raw.headers["x-request-id"].startswith("req_")


def test_stream_with_usage_matches_the_plain_reply():
    with serving(FakeBackend()) as server:
        client = sdk(server)
        plain = client.chat.completions.create(model="fake-model", messages=ask("one two three four"))
        chunks = list(client.chat.completions.create(model="fake-model", messages=ask("one two three four"),
                                                     stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain.choices[0].message.content
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        bare = list(client.chat.completions.create(model="fake-model", messages=ask("hi"), stream=True))
        assert all(c.usage is None for c in bare)


class Capital(BaseModel):
    country: str
    capital: str


def test_json_schema_output_is_validated_and_reasked():
    fake = FakeBackend().enqueue("Sure! Paris.", '{"country": "France", "capital": "Paris"}')
    with serving(fake) as server:
        parsed = sdk(server).chat.completions.parse(model="fake-model", messages=ask("Capital of France?"),
                                                    response_format=Capital)
        assert parsed.choices[0].message.parsed == Capital(country="France", capital="Paris")
        assert len(fake.history) == 2  # the invalid reply was re-asked once, with what was wrong
        assert "not valid" in fake.history[1].messages[-1].content
        fake.enqueue('{"answer": 42}')
        obj = sdk(server).chat.completions.create(model="fake-model", messages=ask("JSON please"),
                                                  response_format={"type": "json_object"})
        assert json.loads(obj.choices[0].message.content) == {"answer": 42}


def test_noise_parameters_are_ignored_and_unsupported_ones_are_400_not_422():
    with serving(FakeBackend()) as server:
        client = sdk(server)
        ok = client.chat.completions.create(model="fake-model", messages=ask("hi"), user="u-1", n=1,
                                            metadata={"app": "web"}, store=False, logprobs=False,
                                            parallel_tool_calls=True, max_completion_tokens=20, temperature=0.2,
                                            top_p=0.9, seed=7, stop=["\n\n"])
        assert ok.choices[0].message.content
        for bad, param in ((dict(n=2), "n"), (dict(tools=[{"type": "function", "function": {"name": "f"}}]),
                                                "tools"), (dict(extra_body={"top_k": 5}), "top_k")):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="fake-model", messages=ask("hi"), **bad)
            assert caught.value.status_code == 400
            assert caught.value.code == "unsupported_parameter" and caught.value.param == param
        nowhere = httpx2.post(server.url + "/v1/nope")
        assert nowhere.status_code == 404 and nowhere.json()["error"]["message"]
    with serving(FakeBackend(), ServeOptions(max_tokens=50)) as server:
        with pytest.raises(openai.BadRequestError, match="at most 50") as caught:
            sdk(server).chat.completions.create(model="fake-model", messages=ask("hi"), max_tokens=51)
        assert caught.value.param == "max_tokens"


def test_context_length_exceeded_is_a_400_with_both_numbers():
    fake = FakeBackend(context_window=200)
    with serving(fake) as server:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(server).chat.completions.create(model="fake-model", messages=ask("word " * 300), max_tokens=10)
        err = caught.value
        assert err.code == "context_length_exceeded" and err.param == "messages"
        prompt = fake.count_tokens([aigc_message("word " * 300)], "fake-model")
        assert "maximum context length is 200 tokens" in err.message and f"{prompt} in the messages" in err.message
        assert fake.history == []  # refused before anything was generated
        # Without max_tokens the reply gets what the window leaves: a prompt of 190 tokens may still be answered.
        reply = sdk(server).chat.completions.create(model="fake-model", messages=ask("word " * 150))
        assert reply.usage.total_tokens <= 200


def aigc_message(text: str):
    from aigc.types import Message

    return Message(role="user", content=text)


@pytest.fixture
def keys(isolated_env):
    store = KeyStore(isolated_env / "data" / "serve-keys.db")
    yield store
    store.close()


def test_keys_401_and_the_key_stored_only_as_a_hash(keys, isolated_env):
    _, secret = keys.add("web")
    _, gone = keys.add("old")
    keys.revoke("old")
    with serving(FakeBackend(), keys=keys) as server:
        for key, code in (("no-key", "invalid_api_key"), (gone, "key_revoked")):
            with pytest.raises(openai.AuthenticationError) as caught:
                sdk(server, key).chat.completions.create(model="fake-model", messages=ask("hi"))
            assert caught.value.code == code
        assert httpx2.post(server.url + "/v1/chat/completions", json={}).json()["error"]["code"] == \
            "missing_api_key"
        assert sdk(server, secret).chat.completions.create(model="fake-model", messages=ask("hi")).choices
        assert httpx2.get(server.url + "/health").status_code == 200  # operations need no key
    assert secret.encode() not in (isolated_env / "data" / "serve-keys.db").read_bytes()


async def test_a_token_budget_holds_under_concurrency_and_is_not_retried(keys):
    fake = SlowFake(delay=0.2)
    prompt = fake.count_tokens([aigc_message("hello")], "fake-model")
    record, secret = keys.add("team", max_total_tokens=3 * (prompt + 40))
    with serving(fake, keys=keys) as server:
        async with async_sdk(server, secret) as client:  # the SDK retries 429s twice, unless told not to
            outcomes = await asyncio.gather(*(client.chat.completions.create(
                model="fake-model", messages=ask("hello"), max_tokens=40) for _ in range(8)),
                return_exceptions=True)
        ok = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
        assert len(ok) == 3 and len(refused) == 5  # reserved before sending: no overspend however many race
        assert {e.code for e in refused} == {"insufficient_quota"}
        assert {e.response.headers["x-should-retry"] for e in refused} == {"false"}
        assert len(fake.history) == 3  # the refused ones never reached the model, nor came back
        spend = keys.spend(record)
        assert spend.tokens == sum(o.usage.total_tokens for o in ok) <= record.max_total_tokens
        assert spend.held_tokens == 0


def test_rate_limits_answer_429_with_retry_after(keys):
    _, secret = keys.add("slowpoke", rpm=2)
    with serving(FakeBackend(), keys=keys) as server:
        client = sdk(server, secret, max_retries=0)
        for _ in range(2):
            client.chat.completions.create(model="fake-model", messages=ask("hi"))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="fake-model", messages=ask("hi"))
        err = caught.value
        assert err.code == "rate_limit_exceeded"
        assert 50 <= float(err.response.headers["retry-after"]) <= 60
        assert 50_000 <= int(err.response.headers["retry-after-ms"]) <= 60_000


async def test_a_full_queue_answers_503_before_reading_the_request():
    fake = SlowFake(delay=0.5)
    with serving(fake, ServeOptions(max_running=1, max_waiting=1)) as server:
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as http:
            body = {"model": "fake-model", "messages": ask("hi")}
            busy = [asyncio.create_task(http.post("/v1/chat/completions", json=body)) for _ in range(2)]
            await asyncio.sleep(0.2)
            full = await http.post("/v1/chat/completions", content=b"not even JSON",
                                   headers={"content-type": "application/json"})
            assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
            assert int(full.headers["retry-after-ms"]) > 0
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200]
            assert metric(server, "aigc:requests_rejected_total", 'reason="queue_full"') == 1


async def test_sixteen_concurrent_streams_each_get_their_own_reply():
    with serving(SlowFake(delay=0.01)) as server:
        client = async_sdk(server)

        async def one(i: int) -> tuple[str, int]:
            stream = await client.chat.completions.create(
                model="fake-model", messages=ask(f"stream number {i}"), stream=True,
                stream_options={"include_usage": True})
            text, usage = "", 0
            async for c in stream:
                text += c.choices[0].delta.content or "" if c.choices else ""
                usage = c.usage.total_tokens if c.usage else usage
            return text, usage

        async with client:
            results = await asyncio.gather(*(one(i) for i in range(16)))
        assert [t for t, _ in results] == [f"Fake reply: stream number {i}" for i in range(16)]
        assert all(u > 0 for _, u in results)


def test_a_client_that_goes_away_stops_its_generation():
    fake = SlowFake(delay=0.05, context_window=10_000)
    words = " ".join(f"w{i}" for i in range(200))
    fake.enqueue(words)
    with serving(fake) as server:
        with httpx2.stream("POST", server.url + "/v1/chat/completions", timeout=30,
                           json={"model": "fake-model", "messages": ask("go"), "stream": True}) as response:
            lines = response.iter_lines()
            for line in lines:
                if "w3" in line:
                    break
        time.sleep(0.5)
        produced = fake.produced
        time.sleep(0.5)
        assert fake.produced == produced < 50  # stopped, far short of the 200 words
        assert metric(server, "aigc:requests_cancelled_total") == 1
        assert metric(server, "aigc:queue_depth") == 0
        # A plain request whose client gives up is cancelled too, and its place in the queue is freed.
        fake.enqueue(lambda request: time.sleep(1.5) or "too late")
        with pytest.raises(httpx2.TimeoutException):
            httpx2.post(server.url + "/v1/chat/completions", timeout=0.2,
                        json={"model": "fake-model", "messages": ask("slow"), "max_tokens": 5})
        time.sleep(0.3)
        assert metric(server, "aigc:requests_cancelled_total") == 2
        assert metric(server, "aigc:queue_depth") == 0


def test_task_endpoints_return_the_result_with_long_inputs_handled():
    fake = FakeBackend(context_window=2000)
    with serving(fake) as server:
        short = httpx2.post(server.url + "/v1/tasks/summarize", json={"text": "The sea is wide.", "length": "1 line"})
        assert short.status_code == 200
        result = short.json()
        assert result["task"] == "summarize" and result["text"] and result["usage"]["prompt_tokens"] > 0
        long_text = "\n\n".join(f"Paragraph {i}. " + "The harbour was busy that morning. " * 12 for i in range(60))
        big = httpx2.post(server.url + "/v1/tasks/summarize", json={"text": long_text}, timeout=60).json()
        assert big["requests"] > 2  # map-reduced to fit the 2000-token window
        translated = httpx2.post(server.url + "/v1/tasks/translate", json={"text": "Hallo", "to": "English"})
        assert translated.json()["task"] == "translate"
        assert httpx2.post(server.url + "/v1/tasks/answer", json={"question": "Why?", "context": "Because."}
                           ).json()["task"] == "answer"
        assert httpx2.post(server.url + "/v1/tasks/news", json={"facts": "A bridge opened."}).json()["task"] == \
            "news"
        missing = httpx2.post(server.url + "/v1/tasks/translate", json={"text": "Hallo"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "to"
        odd = httpx2.post(server.url + "/v1/tasks/summarize", json={"text": "x", "tone": "dry"})
        assert odd.status_code == 400 and odd.json()["error"]["code"] == "unsupported_parameter"


def test_every_declared_task_is_served_by_its_declaration():
    fake = FakeBackend()
    fake.enqueue('{"label": "shipping", "reason": "A lost parcel."}', '{"label": "negative", "reason": "Angry."}')
    with serving(fake) as server:
        labelled = httpx2.post(server.url + "/v1/tasks/classify",
                               json={"text": "My parcel is lost.", "labels": ["billing", "shipping", "other"]})
        assert labelled.status_code == 200, labelled.text
        assert labelled.json()["text"] == "shipping" and labelled.json()["parsed"]["label"] == "shipping"
        mood = httpx2.post(server.url + "/v1/tasks/sentiment", json={"text": "This is awful."}).json()
        assert mood["task"] == "sentiment" and mood["text"] == "negative"
        bad = httpx2.post(server.url + "/v1/tasks/classify", json={"text": "x", "labels": "billing"})
        assert bad.status_code == 400 and "labels" in bad.json()["error"]["message"]
        unknown = httpx2.post(server.url + "/v1/tasks/haiku", json={"text": "x"})
        assert unknown.status_code == 404 and "classify" in unknown.json()["error"]["message"]


def test_operations_health_ready_metrics_body_limit_and_access_log(caplog):
    with serving(FakeBackend(), ServeOptions(max_body_bytes=2048)) as server:
        assert httpx2.get(server.url + "/health").json() == {"status": "ok"}
        assert httpx2.get(server.url + "/ready").json()["status"] == "ready"
        too_big = httpx2.post(server.url + "/v1/chat/completions",
                              json={"model": "fake-model", "messages": ask("x" * 5000)})
        assert too_big.status_code == 413
        with caplog.at_level(logging.INFO, logger="aigc.serve.access"):
            sdk(server, "sk-secret-looking-key").chat.completions.create(
                model="fake-model", messages=ask("my private question"), stream=True)
            list(sdk(server).chat.completions.create(model="fake-model", messages=ask("another one"),
                                                     stream=True))
            time.sleep(0.2)
        text = httpx2.get(server.url + "/metrics").text
        for name in ("aigc:num_requests_running", "aigc:num_requests_waiting", "aigc:queue_depth",
                     "aigc:time_to_first_token_seconds_bucket", "aigc:e2e_request_latency_seconds_bucket",
                     "aigc:prompt_tokens_total", "aigc:generation_tokens_total", "aigc:requests_total"):
            assert name in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "aigc.serve.access"]
    assert {line["path"] for line in lines} == {"/v1/chat/completions"}
    assert all("request_id" in line and "status" in line for line in lines)
    logged = caplog.text
    assert "private question" not in logged and "sk-secret" not in logged


def test_usage_per_key_lands_in_the_ledger(keys, isolated_env):
    _, a = keys.add("alpha")
    _, b = keys.add("beta")
    with serving(FakeBackend(), keys=keys) as server:
        for key, n in ((a, 2), (b, 1)):
            for _ in range(n):
                sdk(server, key).chat.completions.create(model="fake-model", messages=ask("count me"))
    settings = load_settings()
    with Ledger(settings.data_dir / "ledger.db") as ledger:
        rows = {r.key: r for r in ledger.report(by="key")}
    assert rows["alpha"].requests == 2 and rows["beta"].requests == 1
    from aigc.cli import main

    with pytest.raises(SystemExit) as done:
        main(["usage", "--by", "key", "--json"])
    assert done.value.code == 0


def test_a_public_address_without_keys_is_refused(isolated_env):
    from aigc.errors import ConfigError
    from aigc.serve import open_keys

    with pytest.raises(ConfigError, match="--allow-no-auth"):
        open_keys(isolated_env / "data", "0.0.0.0")
    assert open_keys(isolated_env / "data", "0.0.0.0", allow_no_auth=True) is None
    assert open_keys(isolated_env / "data", "127.0.0.1") is None
    KeyStore(isolated_env / "data" / "serve-keys.db").close()
    assert open_keys(isolated_env / "data", "127.0.0.1") is not None  # once keys exist, they are required


_CHILD = """
import aigc
from aigc.config import load_settings
from aigc.serve import Core, ServeOptions, Server, create_app
from tests.serving import SlowFake

app = create_app(Core(aigc.AsyncClient(backend=SlowFake(delay=0.1), settings=load_settings({"backend": "fake"}))),
                 ServeOptions())
Server(app, "127.0.0.1", 0, drain_timeout=30, on_started=lambda s: print(s.url, flush=True)).run()
print("drained and stopped", flush=True)
"""


@pytest.mark.slow
def test_sigterm_lets_requests_in_flight_finish():
    import signal
    import subprocess
    import sys
    import threading

    from tests.conftest import REPO
    from tests.serving import wait_ready

    child = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        url = child.stdout.readline().strip()
        wait_ready(url)
        started, replies = threading.Barrier(4), {}

        def stream(i: int) -> None:
            body = {"model": "fake-model", "messages": ask(f"a reply of several words, number {i}"), "stream": True}
            with httpx2.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as response:
                lines = response.iter_lines()
                events = [next(lines)]
                started.wait()
                events += list(lines)
            replies[i] = [e for e in events if e.startswith("data: ")]

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        started.wait()
        child.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx2.ConnectError):  # no new connections while draining
            httpx2.get(url + "/health", timeout=2)
        for t in threads:
            t.join(30)
        assert child.wait(30) == 0
        assert child.stdout.read().strip() == "drained and stopped"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    for i in range(3):
        assert replies[i][-1] == "data: [DONE]"  # every stream in flight was finished
        text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                       for e in replies[i][:-1] if json.loads(e[6:])["choices"])
        assert text == f"Fake reply: a reply of several words, number {i}"


def test_importing_the_server_loads_no_model_libraries():
    import subprocess
    import sys

    code = ("import sys, aigc.serve, aigc.balance; "
            "print(sorted(m for m in ('torch', 'transformers', 'llguidance') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_keys_commands(isolated_env, capsys):
    from aigc.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(list(argv))
        out, err = capsys.readouterr()
        return done.value.code, out, err

    code, out, err = run("serve", "keys", "add", "team-web", "--max-cost-usd", "20", "--budget-period", "30d",
                         "--rpm", "60", "--models", "gpt-4o-mini")
    secret = out.strip()
    assert code == 0 and secret.startswith("sk-aigc-") and "cannot be shown again" in err
    code, out, _ = run("serve", "keys", "list")
    assert "team-web" in out and secret not in out and secret[-4:] in out and "$20 per 30d; 60 rpm" in out
    code, out, _ = run("serve", "keys", "info", "team-web", "--json")
    info = json.loads(out)
    assert info["max_cost_usd"] == 20 and info["budget_period_s"] == 30 * 86400 and info["period_tokens"] == 0
    assert run("serve", "keys", "add", "team-web")[0] == 2  # the name is taken
    assert run("serve", "keys", "revoke", "team-web")[0] == 0
    assert json.loads(run("serve", "keys", "list", "--json")[1])[0]["status"] == "revoked"
    assert run("serve", "keys", "info", "nobody")[0] == 2


def test_serving_a_public_address_without_keys_is_refused_by_the_cli(isolated_env, capsys):
    from aigc.cli import main

    with pytest.raises(SystemExit) as done:
        main(["serve", "--backend", "fake", "--host", "0.0.0.0"])
    assert done.value.code == 2
    assert "--allow-no-auth" in capsys.readouterr().err


@pytest.mark.slow
def test_the_serve_command_end_to_end(isolated_env):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.serving import wait_ready

    child = subprocess.Popen([sys.executable, "-m", "aigc", "serve", "--backend", "fake", "--port", "0", "--json"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        facts = json.loads(child.stdout.readline())
        assert facts["backend"] == "fake" and facts["auth"] is False
        wait_ready(facts["url"])
        client = openai.OpenAI(base_url=facts["api"], api_key="-")
        assert client.chat.completions.create(model="fake-model", messages=ask("hello")).choices
        client.close()
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
        access = [json.loads(line) for line in child.stderr.read().splitlines() if line.startswith("{")]
        assert [a["path"] for a in access][-1] == "/v1/chat/completions"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()


def test_knowledge_counts_with_the_backend_when_it_has_no_tokenizer_object():
    import aigc
    from aigc.serve import Core

    class NoTokenizer(FakeBackend):
        def text_counter(self, model: str):
            return None  # as the local backend: count through count_text

    core = Core(aigc.AsyncClient(backend=NoTokenizer(load_settings({"backend": "fake"})), ledger=False))
    assert core.text_counter()("Our team meetings happen every Monday.") > 0
