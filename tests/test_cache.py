"""The response cache: what counts as the same request, and what never reaches the file."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from aigc.cache import ResponseCache, canonical_json
from aigc.types import Message

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-proj-DoNotStoreThisKey0123456789"

REQUEST = {
    "backend": "openai",
    "base_url": "https://api.openai.com/v1",
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Summarise in one sentence."},
        {"role": "user", "content": "The quarterly report shows revenue up 12%."},
    ],
    "temperature": 0.2,
    "max_tokens": 200,
    "json_schema": None,
}
COMPLETION = {"text": "Revenue rose 12% this quarter.", "finish_reason": "stop", "model": "gpt-4o-mini-2024-07-18",
              "usage": {"prompt_tokens": 31, "completion_tokens": 8}}


@pytest.fixture
def cache(tmp_path):
    with ResponseCache.in_dir(tmp_path / "data") as cache:
        yield cache


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_round_trip_and_hit_counting(cache):
    assert cache.get(REQUEST) is None
    cache.put(REQUEST, COMPLETION)
    assert cache.get(REQUEST) == COMPLETION
    assert cache.get(REQUEST) == COMPLETION
    stats = cache.stats()
    assert (stats.entries, stats.hits) == (1, 2)
    assert stats.size_bytes > 0


def test_put_replaces_an_entry(cache):
    cache.put(REQUEST, COMPLETION)
    cache.put(REQUEST, {**COMPLETION, "text": "Revenue grew."})
    assert cache.get(REQUEST)["text"] == "Revenue grew."
    assert cache.stats().entries == 1


def test_the_key_is_stable_across_releases():
    # Changing how requests are canonicalised must bump _KEY_VERSION: old entries must miss, not match wrongly.
    assert ResponseCache.key(REQUEST) == "a9e648027d398600ec9704d7c1e7e148425b464a5442d85a83df86d7097142be"


def test_the_key_ignores_how_the_request_was_written():
    reordered = {key: REQUEST[key] for key in reversed(list(REQUEST))}
    reordered["messages"] = [{"content": m["content"], "role": m["role"]} for m in REQUEST["messages"]]
    spelled_differently = {
        **REQUEST,
        "base_url": "HTTPS://user:pw@API.OpenAI.com/v1/?api-version=1",
        "temperature": 0.2,
        "max_tokens": 200.0,
        "seed": None,
        "messages": [Message(role=m["role"], content=m["content"]) for m in REQUEST["messages"]],
    }
    assert ResponseCache.key(reordered) == ResponseCache.key(REQUEST)
    assert ResponseCache.key(spelled_differently) == ResponseCache.key(REQUEST)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"backend": "local"},
        {"base_url": "http://localhost:8000/v1"},
        {"temperature": 0.7},
        {"max_tokens": 201},
        {"json_schema": {"name": "summary", "schema": {"type": "object"}}},
        {"messages": [{"role": "user", "content": "The quarterly report shows revenue up 13%."}]},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_key_changes_with_anything_that_changes_the_answer(change):
    assert ResponseCache.key({**REQUEST, **change}) != ResponseCache.key(REQUEST)


def test_no_credentials_reach_the_key_or_the_file(tmp_path):
    with_secrets = {
        **REQUEST,
        "api_key": API_KEY,
        "headers": {"Authorization": f"Bearer {API_KEY}"},
        "base_url": f"https://{API_KEY}@api.openai.com/v1?key={API_KEY}",
    }
    assert API_KEY not in canonical_json(with_secrets)
    assert ResponseCache.key(with_secrets) == ResponseCache.key(REQUEST)

    path = tmp_path / "cache.db"
    with ResponseCache(path) as cache:
        cache.put(with_secrets, COMPLETION)
        assert cache.get(REQUEST) == COMPLETION
        assert API_KEY.encode() not in file_bytes(path)
    assert API_KEY.encode() not in file_bytes(path)


def test_clear(cache):
    cache.put(REQUEST, COMPLETION)
    cache.put({**REQUEST, "model": "gpt-4o"}, COMPLETION)
    assert cache.clear(older_than=timedelta(days=30)) == 0
    assert cache.clear() == 2
    assert cache.get(REQUEST) is None
    assert cache.stats().entries == 0


def test_requests_must_be_plain_data(cache):
    with pytest.raises(TypeError, match="cannot put a set in a cache key"):
        cache.key({**REQUEST, "stop": {"\n"}})


def test_another_process_sees_what_this_one_stored(tmp_path):
    path = tmp_path / "cache.db"
    script = (
        "import json, sys; from aigc.cache import ResponseCache\n"
        "with ResponseCache(sys.argv[1]) as c: c.put(json.loads(sys.argv[2]), {'text': 'from the other process'})\n"
    )
    with ResponseCache(path) as cache:
        assert cache.get(REQUEST) is None
        subprocess.run([sys.executable, "-c", script, str(path), json.dumps(REQUEST)],
                       cwd=REPO, check=True, timeout=30)
        assert cache.get(REQUEST) == {"text": "from the other process"}
