"""The model table: shipped figures, name fallback, costs, and a user's file merged over it."""

from __future__ import annotations

from datetime import date

import pytest

from aigc.errors import ConfigError, InputError
from aigc.models import ModelTable, lookup
from aigc.types import Usage

HOSTED = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5", "gpt-5-mini", "gpt-5-nano",
          "o3", "o4-mini", "gpt-4-turbo", "gpt-3.5-turbo"]


@pytest.mark.parametrize("name", HOSTED)
def test_shipped_table_has_limits_encoding_and_dated_prices(name):
    info = lookup(name)
    assert info.known and info.matched == name and info.backend == "openai"
    assert 0 < info.max_output_tokens <= info.context_window
    assert info.encoding in ("o200k_base", "cl100k_base")
    assert info.input_price > 0 and info.output_price > info.input_price
    assert info.batch_input_price == pytest.approx(info.input_price / 2)
    assert info.batch_output_price == pytest.approx(info.output_price / 2)
    assert isinstance(info.prices_as_of, date)


def test_local_model_is_free_and_uses_its_own_tokenizer():
    info = lookup("SmolLM2-135M-Instruct")
    assert (info.backend, info.encoding, info.tokenizer) == ("local", None, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert info.context_window == 8192
    assert info.estimate_cost(5000, 1000) == 0.0


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest known name the date extends
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # listed itself: its own price
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),  # alias
        ("o3-mini-2025-01-31", None),  # not o3: only a date may follow a known name
        ("gpt-4o-audio-preview", None),
        ("llama3:8b", None),
    ],
)
def test_lookup_fallback(name, entry):
    info = lookup(name)
    assert info.name == name
    assert info.matched == entry
    assert info.known is (entry is not None)


def test_unknown_model_is_conservative_and_has_no_cost():
    info = lookup("my-finetune")
    assert (info.context_window, info.encoding) == (8192, "o200k_base")
    assert info.estimate_cost(1000, 1000) is None
    assert info.cost(Usage(prompt_tokens=10, completion_tokens=10)) is None


@pytest.mark.parametrize(
    ("model", "prompt", "completion", "options", "usd"),
    [
        ("gpt-4o", 1000, 500, {}, (1000 * 2.50 + 500 * 10.00) / 1e6),
        ("gpt-4o", 1000, 500, {"cached_tokens": 400}, (600 * 2.50 + 400 * 1.25 + 500 * 10.00) / 1e6),
        ("gpt-4o", 1000, 500, {"batch": True}, (1000 * 1.25 + 500 * 5.00) / 1e6),
        ("gpt-5-nano", 1_000_000, 1_000_000, {}, 0.05 + 0.40),
        ("gpt-3.5-turbo", 2000, 0, {"cached_tokens": 2000}, 2000 * 0.50 / 1e6),  # no cached price: full price
        ("gpt-4o-mini-2024-07-18", 1_000_000, 0, {}, 0.15),
    ],
)
def test_estimate_cost(model, prompt, completion, options, usd):
    assert lookup(model).estimate_cost(prompt, completion, **options) == pytest.approx(usd)


def test_cost_of_usage():
    assert lookup("gpt-4.1").cost(Usage(prompt_tokens=10_000, completion_tokens=2_000)) == pytest.approx(0.036)


@pytest.mark.parametrize(("prompt", "completion", "cached"), [(-1, 0, 0), (10, 0, 11)])
def test_impossible_token_counts_are_input_errors(prompt, completion, cached):
    with pytest.raises(InputError):
        lookup("gpt-4o").estimate_cost(prompt, completion, cached_tokens=cached)


def test_max_prompt_tokens_respects_the_input_cap():
    assert lookup("gpt-5").max_prompt_tokens(reply_tokens=10_000) == 272_000
    assert lookup("gpt-4o").max_prompt_tokens(reply_tokens=10_000) == 118_000


def test_user_file_overrides_keys_and_adds_models(tmp_path):
    user = tmp_path / "models.toml"
    user.write_text(
        '[models."gpt-4o"]\n'
        "input_price = 3.00\n"
        "\n"
        '[models."llama3:8b"]\n'
        "context_window = 8192\n"
        "max_output_tokens = 2048\n"
        "input_price = 0.0\n"
        "output_price = 0.0\n"
        "prices_as_of = 2025-01-01\n",
        encoding="utf-8",
    )
    table = ModelTable.load(user)
    gpt4o = table.lookup("gpt-4o")
    assert gpt4o.input_price == 3.00 and gpt4o.output_price == 10.00  # only the key set changes
    assert gpt4o.prices_as_of is None  # the shipped date no longer describes the price
    assert table.lookup("gpt-4o-2024-11-20").input_price == 3.00
    llama = table.lookup("llama3:8b")
    assert llama.known and llama.encoding == "o200k_base" and llama.estimate_cost(10, 10) == 0.0
    assert table.lookup("gpt-5").input_price == 1.25  # the rest of the shipped table stays
    assert str(user) in table.sources


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[models."gpt-4o"\ninput_price = 1', "not valid TOML"),
        ('[models."gpt-4o"]\ninput_prise = 1.0', "models.gpt-4o.input_prise: unknown key"),
        ('[models."gpt-4o"]\ncontext_window = "large"', "models.gpt-4o.context_window"),
        ('[models."gpt-4o"]\ninput_price = -1.0', "models.gpt-4o.input_price"),
        ('[models."gpt-4o"]\nencoding = "o300k"', "unknown tiktoken encoding"),
        ('[models."gpt-4o"]\nmax_output_tokens = 999999', "exceeds context_window"),
        ('[models."new-model"]\ninput_price = 1.0', "models.new-model.context_window: required"),
        ("[models.gpt-4.2]\ncontext_window = 1000\nmax_output_tokens = 10", 'needs quotes: [models."gpt-4.2"]'),
        ("[model.x]\ncontext_window = 1", "unknown top-level key 'model'"),
    ],
)
def test_bad_user_file_names_file_and_key(tmp_path, content, expected):
    user = tmp_path / "my-models.toml"
    user.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ModelTable.load(user)
    assert str(user) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_user_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ModelTable.load(tmp_path / "nope.toml")
