"""Shared fixtures: every test runs offline in its own user dirs with a clean environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Converted local models are kept across tests (and runs): converting the GGUF takes ~20 s.
MODEL_CACHE = Path(os.environ.get("AIGC_TEST_MODEL_CACHE", REPO / ".cache" / "test-models"))


def _isolate(monkeypatch, folder: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AIGC_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIGC_CONFIG", str(folder / "config" / "config.toml"))
    monkeypatch.setenv("AIGC_DATA_DIR", str(folder / "data"))
    cache = folder / "cache"
    cache.mkdir(exist_ok=True)
    (MODEL_CACHE / "models").mkdir(parents=True, exist_ok=True)
    if not (cache / "models").exists():
        (cache / "models").symlink_to(MODEL_CACHE / "models", target_is_directory=True)
    monkeypatch.setenv("AIGC_CACHE_DIR", str(cache))
    # The test server on 127.0.0.1 stands in for the hosted API: no local-server defaults unless a test asks.
    monkeypatch.setenv("AIGC_LOCAL_SERVER", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def isolated_session(tmp_path_factory):
    """The same for fixtures shared by a module or the session (a loaded model's client), which are built
    before any test's own isolation: nothing ever reaches the real user dirs."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, tmp_path_factory.mktemp("session"))
        yield


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No real keys, config or user dirs leak in; each test gets fresh ones (its own cache dir too, so what
    aigc learns about servers stays in the test, sharing the converted models)."""
    _isolate(monkeypatch, tmp_path)
    yield tmp_path


def aim_cli(monkeypatch, server, key: str) -> None:
    """The environment a command-line test runs in: the test server as the API, this key, and quick give-ups
    (two attempts of five seconds)."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("AIGC_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AIGC_TIMEOUT", "5")


@pytest.fixture
def article(tmp_path):
    """A one-sentence news item in a file."""
    path = tmp_path / "article.txt"
    path.write_text("The harbour festival drew 40,000 visitors over three days, organisers said on Sunday.\n")
    return path
