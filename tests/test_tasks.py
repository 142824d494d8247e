"""Tasks as declarations: one name everywhere, a new task from one declaration plus its template, templates
that declare their own task, raw chat messages, and arguments checked against the declaration."""

from __future__ import annotations

import json

import pytest

import aigc
from aigc.errors import ConfigError, ContextLengthExceeded, InputError
from aigc.tasks import Param, Task, find_task, get_task, register_task
from tests.openai_server import FakeOpenAIServer
from tests.test_batch_job import make_articles, run_cli, use_server, write_job

KEY = "sk-test-tasks-abcdef123456"

HEADLINE_TEMPLATE = """+++
description = "A headline for an article"
temperature = 0.4
max_output_tokens = 24
+++
{% block system %}You write short, factual headlines.{% endblock %}
{% block user %}{{ text }}

Write a headline of at most {{ words }} words for the article above.{% endblock %}
"""


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer() as s:
        use_server(monkeypatch, s)
        yield s


@pytest.fixture
def headline(tmp_path, monkeypatch):
    """A new built-in-style task: one declaration and its template, nothing else touched."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "headline.j2").write_text(HEADLINE_TEMPLATE)
    monkeypatch.setenv("AIGC_TEMPLATES_DIR", str(templates))
    task = register_task(Task(
        name="headline", template="headline", input="text", long_input="condense",
        summary="Write a headline for an article.", example="aigc headline article.txt --words 8",
        params=(Param("text", required=True, positional=True, nonblank=True, help="The article."),
                Param("words", int, default=8, help="At most this many words."))))
    yield task
    from aigc import tasks

    tasks._tasks.pop("headline", None)


def test_one_declaration_and_a_template_make_a_task_in_the_library_the_cli_and_batch_jobs(
        headline, server, tmp_path, capsys):
    # The library: by name, and as a method.
    with aigc.Client() as client:
        result = client.headline("The council approved new bike lanes on Tuesday.", words=6)
        assert client.run("headline", "Another article.").task == "headline"
    assert result.task == "headline" and result.text
    body = server.requests[0].body
    assert "at most 6 words" in body["messages"][-1]["content"] and body["max_tokens"] == 24
    assert body["temperature"] == 0.4  # the template's defaults apply

    # The command line: its own command, its parameter as an option, its example in --help.
    article = tmp_path / "article.txt"
    article.write_text("The harbour festival drew 40,000 visitors.\n")
    code, out, _ = run_cli(capsys, "headline", article, "--words", "5", "--json")
    assert code == 0 and json.loads(out)["task"] == "headline"
    assert "at most 5 words" in server.requests[-1].body["messages"][-1]["content"]
    code, out, _ = run_cli(capsys, "headline", "--help")
    assert code == 0 and "aigc headline article.txt --words 8" in out and "--words" in out

    # A batch job: task = "headline", its variable checked against the declaration.
    make_articles(tmp_path / "articles", 3)
    job = write_job(tmp_path, """
        task = "headline"
        [input]
        glob = "articles/*.md"
        [output]
        dir = "out"
        [vars]
        words = 4
        [model]
        model = "gpt-4o-mini"
    """)
    code, out, err = run_cli(capsys, "batch", "run", job)
    assert code == 0, out + err
    assert len(list((tmp_path / "out").iterdir())) == 3
    bad = write_job(tmp_path, '''
        task = "headline"
        [input]
        glob = "articles/*.md"
        [output]
        dir = "out"
        [vars]
        colour = "red"
    ''', name="bad.toml")
    code, _, err = run_cli(capsys, "batch", "run", bad)
    assert code == 2 and "not a headline variable" in err


def test_a_long_input_follows_the_declared_strategy(headline, tmp_path):
    fake = aigc.FakeBackend(context_window=2000)
    article = "\n\n".join(f"Paragraph {i}: the council discussed item {i} at length today. " * 4 for i in range(80))
    with aigc.Client(backend=fake) as client:
        result = client.headline(article)
    assert result.requests > 2 and any("split into" in w for w in result.warnings)
    assert all(fake.count_tokens(r.messages, r.model) + r.max_output_tokens <= 2000 for r in fake.history)


def test_a_template_that_declares_its_input_is_a_task(server, tmp_path, monkeypatch, capsys):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "teaser.j2").write_text("""+++
description = "A teaser for social media"
input = "text"
long_input = "condense"
[params.platform]
type = "str"
default = "Mastodon"
help = "Where it is posted."
[params.hashtags]
type = "int"
default = 2
+++
{% block user %}{{ text }}

Write a teaser for {{ platform }} with {{ hashtags }} hashtags.{% endblock %}
""")
    monkeypatch.setenv("AIGC_TEMPLATES_DIR", str(templates))
    article = tmp_path / "a.txt"
    article.write_text("New ferry line opens in June.\n")
    code, out, err = run_cli(capsys, "generate", "teaser", article, "--var", "hashtags=3", "--json")
    assert code == 0, err
    sent = server.requests[-1].body["messages"][-1]["content"]
    assert "New ferry line" in sent and "for Mastodon with 3 hashtags" in sent
    with aigc.Client() as client:
        assert client.run("teaser", "Short text.", hashtags=1).task == "teaser"
        with pytest.raises(InputError, match="hashtags must be a whole number"):
            client.run("teaser", "Short text.", hashtags="many")


def test_one_name_per_task_old_spellings_still_work(server, tmp_path, capsys):
    assert get_task("qa") is get_task("ask") is get_task("answer")
    assert find_task("write_news") is get_task("news")
    with aigc.Client() as client:
        assert client.write_news("Facts.").task == client.news("Facts.").task == "news"
        assert client.generate("qa", question="Why?").text  # the template's old name
    code, out, _ = run_cli(capsys, "ask", "Who won?")
    assert code == 0 and out.strip()


def test_chat_sends_messages_as_they_are(server):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}]
    with aigc.Client() as client:
        result = client.chat(messages, max_tokens=20, temperature=0)
        streamed = client.chat(messages, max_tokens=20, temperature=0, stream=True)
        assert "".join(streamed) == result.text
    sent = server.requests[0].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert result.task == "chat" and result.usage.prompt_tokens == server.billed["prompt_tokens"] // 2


def test_arguments_are_checked_against_the_declaration(server):
    with aigc.Client() as client:
        with pytest.raises(TypeError, match="unexpected keyword argument 'lenght'"):
            client.summarize("text", lenght="3 sentences")
        with pytest.raises(TypeError, match="missing required argument 'to'"):
            client.run("translate", "Hallo")
        with pytest.raises(InputError, match="to is empty"):
            client.translate("Hallo", to="  ")
        with pytest.raises(InputError, match="text to summarize is empty"):
            client.summarize(" \n ")
        with pytest.raises(InputError, match="message 1 needs a role"):
            client.chat([{"role": "wizard", "content": "hi"}])
    assert server.request_count == 0


def test_every_settings_path_is_validated():
    settings = aigc.load_settings({"backend": "fake"}, env={})
    with pytest.raises(ConfigError, match="temperature"):
        aigc.Client(settings=settings, temperature=5.0)
    with pytest.raises(ConfigError, match="max_output_tokens"):
        aigc.Client(backend="fake", max_tokens=0)
    with pytest.raises(ConfigError, match="rpm"):
        aigc.Client(backend="fake", rpm=-1)


def test_a_task_that_cannot_split_says_so():
    fake = aigc.FakeBackend(context_window=300)
    with aigc.Client(backend=fake) as client, pytest.raises(ContextLengthExceeded, match="holds 300"):
        client.chat([{"role": "user", "content": "word " * 400}])
    assert fake.history == []  # nothing was sent
