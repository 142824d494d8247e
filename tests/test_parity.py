"""Client and AsyncClient are twins: every task, plain, streamed and many at once, gives the same results and
the same accounting (budget, ledger, rate gate, cache) whichever one runs it."""

from __future__ import annotations

import pytest

import aigc
from aigc.ledger import Ledger
from tests.openai_server import FakeOpenAIServer

KEY = "sk-test-parity-abcdef123456"

CALLS = [
    ("summarize", ("The museum reopened after a two-year renovation, with a new wing.",), {"length": "1 sentence"}),
    ("translate", ("Der Zug fährt um acht Uhr ab.",), {"to": "English"}),
    ("answer", ("When does it open?",), {"context": "The library opens at nine."}),
    ("news", ("Council approves bike lanes; work starts in May.",), {"style": "feature"}),
    ("chat", ([{"role": "user", "content": "Say hello to the parity test."}],), {}),
    ("classify", ("The parcel never came.",), {"labels": ["billing", "shipping"]}),
    ("sentiment", ("What a lovely day.",), {}),
]

FIELDS = ("text", "task", "model", "backend", "finish_reason", "usage", "cost_usd", "requests", "attempts",
          "reasks", "response_format", "warnings", "parsed", "redactions", "failover")


def view(result: aigc.Result) -> dict:
    return result.model_dump(include=set(FIELDS))


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


def clients(server, tmp_path, name: str, **kw):
    common = dict(base_url=server.url, api_key=KEY, model="gpt-4o-mini", rpm=6000, cache=True,
                  budget=aigc.Budget(max_total_tokens=100_000, max_cost_usd=1.0),
                  settings=aigc.load_settings({"data_dir": tmp_path / name}, env={}), **kw)
    return common


def ledger_rows(path):
    with Ledger(path) as ledger:
        return [(r.requests, r.prompt_tokens, r.completion_tokens, round(r.cost_usd, 9))
                for r in ledger.report(by="task")]


async def test_every_task_is_the_same_through_both_clients(server, tmp_path):
    sync_kw, async_kw = clients(server, tmp_path, "sync"), clients(server, tmp_path, "async")
    with aigc.Client(**sync_kw) as client:
        plain = [view(client.run(name, *args, **kw)) for name, args, kw in CALLS]
        streamed = []
        for name, args, kw in CALLS:
            stream = client.run(name, *args, stream=True, **kw)
            text = "".join(stream)
            streamed.append((text, view(stream.result)))
        mapped = [view(r) for name, args, kw in CALLS for r in client.map(name, [{**kw, **_first(name, args)}])]
        sync_gate, sync_budget = client.accounting.gate, client.budget
    async with aigc.AsyncClient(**async_kw) as client:
        aplain = [view(await client.run(name, *args, **kw)) for name, args, kw in CALLS]
        astreamed = []
        for name, args, kw in CALLS:
            stream = await client.run(name, *args, stream=True, **kw)
            text = "".join([piece async for piece in stream])
            astreamed.append((text, view(stream.result)))
        amapped = [view(r) for name, args, kw in CALLS
                   for r in await client.map(name, [{**kw, **_first(name, args)}])]
        async_gate, async_budget = client.accounting.gate, client.budget

    assert plain == aplain
    assert streamed == astreamed and [t for t, _ in streamed] == [v["text"] for v in plain]
    assert mapped == amapped
    # Sent once per task and client; the stream and map calls were answered by the cache on both sides.
    assert server.request_count == 2 * len(CALLS)
    assert all("served from the response cache" in v["warnings"] for _, v in streamed)
    assert sync_gate.acquired == async_gate.acquired == len(CALLS)
    assert (sync_budget.spent_tokens, round(sync_budget.spent_usd, 9)) == \
        (async_budget.spent_tokens, round(async_budget.spent_usd, 9)) > (0, 0)
    assert ledger_rows(tmp_path / "sync" / "ledger.db") == ledger_rows(tmp_path / "async" / "ledger.db") != []


async def test_the_safety_checks_are_the_same_through_both_clients(server, tmp_path):
    server.flag("knife", violence=0.9)
    text = "Mail ann@example.com about the library's new opening hours."
    kw = dict(redact=True, moderate=True, cache=False)
    with aigc.Client(**{**clients(server, tmp_path, "sync"), **kw}) as client:
        plain = view(client.summarize(text))
        stream = client.summarize(text, stream=True)
        streamed = ("".join(stream), view(stream.result))
        mapped = [view(r) if isinstance(r, aigc.Result) else type(r)
                  for r in client.map("summarize", [text, "A knife."])]
    async with aigc.AsyncClient(**{**clients(server, tmp_path, "async"), **kw}) as client:
        aplain = view(await client.summarize(text))
        stream = await client.summarize(text, stream=True)
        astreamed = ("".join([p async for p in stream]), view(stream.result))
        amapped = [view(r) if isinstance(r, aigc.Result) else type(r)
                   for r in await client.map("summarize", [text, "A knife."])]
    assert plain == aplain and streamed == astreamed and mapped == amapped
    assert plain["redactions"] == {"email": 1} and mapped[1] is aigc.ContentFlagged
    assert "ann@example.com" not in str([r.body for r in server.requests])
    assert len([r for r in server.requests if r.path == "/v1/moderations"]) == 2 * 4


async def test_the_rate_gate_and_budget_apply_to_streams_too(server, tmp_path):
    async with aigc.AsyncClient(**clients(server, tmp_path, "a", max_tokens=50)) as client:
        stream = await client.summarize("Streaming text for the gate.", stream=True)
        [piece async for piece in stream]
        assert client.accounting.gate.acquired == 1 and client.budget.spent_tokens > 0
    with aigc.Client(**clients(server, tmp_path, "s", max_tokens=50)) as client:
        "".join(client.summarize("Streaming text for the gate.", stream=True))
        assert client.accounting.gate.acquired == 1 and client.budget.spent_tokens > 0


async def test_map_keeps_finished_work_when_one_item_fails(server):
    items = ["First text.", " ", "Third text."]
    with aigc.Client(base_url=server.url, api_key=KEY) as client:
        results = client.map("summarize", items)
        with pytest.raises(aigc.InputError) as failure:
            client.map("summarize", items, return_exceptions=False)
    async with aigc.AsyncClient(base_url=server.url, api_key=KEY) as client:
        aresults = await client.map("summarize", items)
    for got in (results, aresults, failure.value.results):
        assert isinstance(got[0], aigc.Result) and isinstance(got[2], aigc.Result)
        assert isinstance(got[1], aigc.InputError)


def _first(name: str, args: tuple) -> dict:
    """The first positional argument of a call, by its declared name (for map items given as dicts)."""
    return {aigc.get_task(name).params[0].name: args[0]}
