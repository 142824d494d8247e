"""The shipped training chat template: the same text as SmolLM2's own, with the replies marked for the loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aigc.tune.chat_templates import has_generation_markers, training_template
from aigc.tune.data import Example
from aigc.tune.encode import IGNORE, encode_example, label_segments
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.local

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum 2+2"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
     {"role": "assistant", "content": "d\n\nwith lines\n"}],
    [{"role": "user", "content": "Ünïcödé ✓ 中文"}, {"role": "assistant", "content": "  spaces around  "}],
    [{"role": "system", "content": "x"}, {"role": "user", "content": "only a question"}],
    [{"role": "user", "content": "tool?"}, {"role": "tool", "content": "42"}, {"role": "assistant", "content": "ok"}],
]


@pytest.fixture(scope="module")
def tokenizer():
    from aigc.tune.base import load_tokenizer, resolve_base

    return load_tokenizer(resolve_base(None, MODEL_CACHE))  # module fixtures run before the isolated env


@pytest.fixture(scope="module")
def template(tokenizer):
    return training_template(tokenizer.chat_template, model="SmolLM2-135M-Instruct")


def test_smollm2_has_no_markers_and_aigc_ships_a_training_twin(tokenizer, template):
    assert not has_generation_markers(tokenizer.chat_template)
    assert has_generation_markers(template) and template != tokenizer.chat_template


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("prompt", [False, True])
def test_the_training_template_renders_exactly_like_the_original(tokenizer, template, conversation, prompt):
    original = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt)
    training = tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                             add_generation_prompt=prompt)
    assert training == original


def test_only_the_replies_and_their_end_token_are_trained(tokenizer, template):
    example = Example(line=1, messages=CONVERSATIONS[2])
    encoded, problems = encode_example(tokenizer, template, example, 512)
    assert problems == []
    trained = [text for text, is_trained in label_segments(tokenizer, encoded) if is_trained]
    assert trained == ["b<|im_end|>", "d\n\nwith lines\n<|im_end|>"]
    assert tokenizer.decode([t for t in encoded.labels if t != IGNORE]) == "b<|im_end|>d\n\nwith lines\n<|im_end|>"


def test_weight_zero_keeps_a_reply_in_context_but_out_of_the_loss(tokenizer, template):
    messages = json.loads(json.dumps(CONVERSATIONS[2]))
    messages[1]["weight"] = 0
    encoded, _ = encode_example(tokenizer, template, Example(line=1, messages=messages), 512)
    assert [t for t, trained in label_segments(tokenizer, encoded) if trained] == ["d\n\nwith lines\n<|im_end|>"]
    assert "b<|im_end|>" in tokenizer.decode(encoded.input_ids)


def test_an_example_cut_before_its_reply_is_refused(tokenizer, template):
    example = Example(line=7, messages=[{"role": "user", "content": "word " * 100},
                                        {"role": "assistant", "content": "Short."}])
    encoded, problems = encode_example(tokenizer, template, example, 64)
    assert encoded is None
    assert [(p.kind, p.line) for p in problems] == [("truncated-away", 7)]
    whole, _ = encode_example(tokenizer, template, example, 4096)
    cut, problems = encode_example(tokenizer, template, example, whole.full_length - 1)
    assert cut is not None and cut.trained == whole.trained and problems[0].kind == "too-long"


def test_a_template_without_markers_is_refused_with_what_to_do(tmp_path):
    from aigc.errors import ConfigError

    with pytest.raises(ConfigError, match="--chat-template FILE"):
        training_template("{{ messages }}", model="some/model")
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    with pytest.raises(ConfigError, match="no {% generation %} markers"):
        training_template("x", model="some/model", override=plain)


def test_show_labels_prints_trained_and_masked_tokens(capsys):
    from aigc.cli import main

    data = str(Path(__file__).parent / "data" / "beep.jsonl")
    with pytest.raises(SystemExit) as info:
        main(["tune", "validate", data, "--show-labels", "2"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "48 examples, 48 usable, for SmolLM2-135M-Instruct (local)" in out
    assert "trained tokens are between [[ and ]]; the rest is masked" in out
    assert "<|im_start|>user\nWhat color is the sky on a clear day?<|im_end|>\n<|im_start|>assistant\n" \
           "[[Beep boop! Blue.<|im_end|>]]\n" in out
    assert out.count("--- line ") == 2


@pytest.mark.slow
def test_an_eval_suite_compares_the_base_and_a_tuned_folder(tmp_path):
    from aigc.config import load_settings
    from aigc.tune.evals import check_suite, compare

    items = [("a", "The council approved a new park in the town centre on Monday.", "Council approves a park."),
             ("b", "Heavy rain closed the coastal road for three hours on Sunday.", "Rain closes coast road."),
             ("c", "The library will open on Sundays from next month, staff said.", "Library opens Sundays.")]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"id": i, "text": t, "reference": r}) + "\n"
                                                 for i, t, r in items), encoding="utf-8")
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "mini"\ntask = "summarize"\ndata = "data.jsonl"\nmetrics = ["rouge"]\n'
                     '[vars]\nlength = "1 sentence"\n[[candidates]]\nname = "smollm"\nbackend = "local"\n'
                     "max_output_tokens = 16\ntemperature = 0\n", encoding="utf-8")
    check_suite(suite)
    folder = MODEL_CACHE / "models" / "SmolLM2-135M-Instruct"  # stands in for a tuned folder
    result = compare(suite, base="SmolLM2-135M-Instruct", tuned=str(folder), settings=load_settings())
    assert [c["name"] for c in result["candidates"]] == ["base", "tuned"]
    assert result["comparisons"] and result["comparisons"][0]["baseline"] == "base"
    assert result["suite"] == str(suite)
