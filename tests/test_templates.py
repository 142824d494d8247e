"""Prompt templates: built-ins, front-matter defaults, user overrides, loud failures, the sandbox."""

from __future__ import annotations

import pytest

import aigc
from aigc.templates import TemplateLibrary


@pytest.fixture
def library():
    return TemplateLibrary()


@pytest.mark.parametrize("name, variables", [
    ("summarize", {"text": "Rivers flood in spring."}),
    ("translate", {"text": "Bonjour", "to": "English"}),
    ("qa", {"question": "Why is the sky blue?"}),
    ("news", {"facts": "A bridge reopened on Monday."}),
])
def test_builtin_templates_render_system_and_user_messages(library, name, variables):
    messages = library.get(name).render(**variables)
    assert [m.role for m in messages] == ["system", "user"]
    assert all(m.content.strip() for m in messages)
    assert next(iter(variables.values())) in messages[-1].content


def test_front_matter_declares_generation_defaults_and_variable_defaults(library):
    summarize = library.get("summarize")
    assert summarize.defaults["temperature"] == 0.3
    assert summarize.default_vars["length"] == "3 sentences"
    assert "3 sentences" in summarize.render(text="x")[-1].content
    assert "2 words" in summarize.render(text="x", length="2 words")[-1].content


def test_a_missing_variable_is_an_error_naming_it(library):
    with pytest.raises(aigc.TemplateVariableMissing) as info:
        library.get("translate").render(text="Hallo")
    assert info.value.variable == "to"
    assert "'to'" in str(info.value) and "translate" in str(info.value)


def test_input_text_is_data_never_template_source(library):
    sneaky = "{{ 7 * 7 }} {% for x in range(3) %}loop{% endfor %}"
    content = library.get("summarize").render(text=sneaky)[-1].content
    assert sneaky in content
    assert "49" not in content


@pytest.mark.parametrize("body", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ text.__class__ }}",
])
def test_sandbox_escapes_are_refused(tmp_path, body):
    (tmp_path / "evil.j2").write_text("{% block user %}" + body + "{% endblock %}")
    library = TemplateLibrary(tmp_path)
    with pytest.raises(aigc.TemplateError) as info:
        library.get("evil").render(text="x")
    assert "evil" in str(info.value)


def test_user_templates_add_and_override_builtins(tmp_path):
    (tmp_path / "summarize.j2").write_text(
        "+++\ndescription = \"Mine\"\ntemperature = 0.9\n+++\n"
        "{% block user %}TL;DR: {{ text }}{% endblock %}")
    (tmp_path / "headline.j2").write_text(
        "+++\ndescription = \"A headline\"\n[vars]\nwords = 8\n+++\n"
        "{% block system %}You write headlines.{% endblock %}"
        "{% block user %}Headline in {{ words }} words for: {{ text }}{% endblock %}")
    library = TemplateLibrary(tmp_path)
    mine = library.get("summarize")
    assert (mine.origin, mine.defaults["temperature"]) == ("user", 0.9)
    assert mine.render(text="abc")[0].content == "TL;DR: abc"
    names = {t.name: t.origin for t in library.names()}
    assert names["headline"] == "user" and names["news"] == "builtin" and names["summarize"] == "user"


def test_user_templates_can_extend_builtins(tmp_path):
    (tmp_path / "brief.j2").write_text(
        '{% extends "summarize.j2" %}{% block system %}You are terse.{% endblock %}')
    messages = TemplateLibrary(tmp_path).get("brief").render(text="Long story.")
    assert messages[0].content == "You are terse."
    assert "Long story." in messages[1].content


@pytest.mark.parametrize("source, fragment", [
    ("+++\nnot = [valid\n+++\n{% block user %}x{% endblock %}", "front matter"),
    ("{% block user %}{% if %}{% endblock %}", "line"),
    ("{% block system %}only a system message{% endblock %}", "block user"),
])
def test_broken_templates_fail_with_a_clear_message(tmp_path, source, fragment):
    (tmp_path / "broken.j2").write_text(source)
    with pytest.raises(aigc.TemplateError) as info:
        TemplateLibrary(tmp_path).get("broken").render(text="x")
    assert fragment in str(info.value)


def test_unknown_template_lists_the_available_ones(library):
    with pytest.raises(aigc.TemplateError) as info:
        library.get("poem")
    assert "summarize" in str(info.value)


def test_templates_dir_comes_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "hello.j2").write_text("{% block user %}Hello {{ name }}{% endblock %}")
    monkeypatch.setenv("AIGC_TEMPLATES_DIR", str(tmp_path))
    fake = aigc.FakeBackend()
    with aigc.Client(backend=fake) as client:
        client.generate("hello", name="Ada")
    assert fake.history[-1].messages[-1].content == "Hello Ada"


def test_edited_templates_are_picked_up(tmp_path, monkeypatch):
    import os

    import aigc.templates

    monkeypatch.setattr(aigc.templates, "RECHECK_S", 0.0)
    path = tmp_path / "greet.j2"
    path.write_text("{% block user %}Hello {{ name }}{% endblock %}")
    library = TemplateLibrary(tmp_path)
    assert library.get("greet").render(name="Ada")[0].content == "Hello Ada"
    path.write_text("{% block user %}Goodbye {{ name }}{% endblock %}")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert library.get("greet").render(name="Ada")[0].content == "Goodbye Ada"
