"""Token counts: what tiktoken says, what the API bills, and available with no network at all."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aigc.errors import ConfigError, InputError
from aigc.tokens import CUT, count_messages, count_text, encoding_for, get_encoding
from aigc.types import Message

REPO = Path(__file__).resolve().parent.parent

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken" (section 6), and the
# prompt_tokens the API reported for it there.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate "
                                  "jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]


@pytest.mark.parametrize(
    ("model", "billed"),
    [
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-4o-mini-2024-07-18", 124),
        ("gpt-3.5-turbo", 129),
        ("gpt-4-turbo", 129),
    ],
)
def test_count_messages_equals_what_the_api_billed(model, billed):
    as_messages = [Message(**m) for m in COOKBOOK_MESSAGES]
    assert count_messages(as_messages, model) == billed
    assert count_messages(COOKBOOK_MESSAGES, model) == billed  # plain dicts, as sent to the SDK


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], 3),  # only the reply primer
        ([Message(role="user", content="")], 3 + 3 + 1),  # frame + "user"
        ([Message(role="user", content="hi")], 3 + 3 + 1 + 1),
        ([Message(role="user", content="hi", name="ann")], 3 + 3 + 1 + 1 + 1 + 1),
    ],
)
def test_count_messages_rule(messages, expected):
    assert count_messages(messages, "gpt-4o") == expected


def _doc(n_chars: int) -> str:
    rng = random.Random(n_chars)
    words = ["alpha", "beta", "delta:", "http://x.y/z", "42", "3.14", "naïve", "漢字", "emoji🙂", "don't", "<|endoftext|>"]
    out = []
    while sum(map(len, out)) < n_chars:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) + rng.choice([".\n\n", "\n", "\n/", "  \n"]))
    return "".join(out)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-5-mini", "gpt-3.5-turbo", "some-unknown-model"])
@pytest.mark.parametrize(
    "text",
    ["", "Hello, world!", "user text with <|endoftext|> and <|fim_prefix|> inside", "naïve café 漢字 🙂",
     _doc(5_000), _doc(700_000)],  # the last is long enough to be counted in segments
    ids=["empty", "ascii", "special-looking", "unicode", "doc-5k", "doc-700k"],
)
def test_count_text_equals_tiktoken(model, text):
    encoding = encoding_for(model)
    assert count_text(text, model) == len(encoding.encode(text, disallowed_special=()))


@pytest.mark.parametrize("encoding_name", ["o200k_base", "cl100k_base"])
def test_counts_add_up_across_cut_points(encoding_name):
    """The property counting and chunking rely on: cut after a newline before non-space, counts add."""
    enc = get_encoding(encoding_name)
    rng = random.Random(7)
    pieces = list("ab Z 9 .,;:!?'\"/\\-_()<>|\t\r\n\n\n") + ["\u00a0", "\u2028", "\x85", "é", "漢", "\u0301",
                                                            "'s", "'S", "\n/", "\n'", "\n1", "\n.", "\n ", "\r\n",
                                                            "<|endoftext|>", " the", "    ", "🙂"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 400)))
        cuts = [0, *(m.end() for m in CUT.finditer(text)), len(text)]
        parts = sum(len(enc.encode_ordinary(text[a:b])) for a, b in zip(cuts, cuts[1:], strict=False))
        assert parts == len(enc.encode_ordinary(text)), repr(text)


def test_counting_works_with_the_network_unreachable(tmp_path):
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    script = textwrap.dedent("""
        import socket

        def refuse(*args, **kwargs):
            raise OSError("network unreachable (blocked by the test)")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        import tiktoken
        try:
            tiktoken.get_encoding("cl100k_base")
        except Exception:
            print("tiktoken alone: cannot load")
        else:
            raise SystemExit("tiktoken loaded an encoding: the network block is not working")

        from aigc.tokens import count_messages, count_text, get_encoding

        text = "Offline: <|endoftext|> is counted as text. " * 40
        for model, name in [("gpt-4o", "o200k_base"), ("gpt-3.5-turbo", "cl100k_base")]:
            ours = count_text(text, model)
            theirs = len(tiktoken.get_encoding(name).encode(text, disallowed_special=()))
            assert ours == theirs, (model, ours, theirs)
            print(model, ours, count_messages([{"role": "user", "content": text}], model))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_GYM_CACHE_DIR", "TIKTOKEN_CACHE_DIR")}
    env.update(TIKTOKEN_CACHE_DIR=str(cache), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "tiktoken alone: cannot load"
    assert [line.split()[0] for line in lines[1:]] == ["gpt-4o", "gpt-3.5-turbo"]
    assert len(list(cache.iterdir())) == 2  # both files were seeded into the empty cache


def test_local_models_are_not_counted_with_tiktoken():
    with pytest.raises(ConfigError, match="own tokenizer"):
        count_text("hello", "SmolLM2-135M-Instruct")


def test_unknown_encoding_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown tiktoken encoding"):
        get_encoding("o300k_base")


def test_non_text_content_is_an_input_error():
    with pytest.raises(InputError, match="text content"):
        count_messages([{"role": "user", "content": [{"type": "image_url"}]}], "gpt-4o")
