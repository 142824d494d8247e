"""`aigc doctor`: what a person setting up a machine needs to know, never the key itself."""

from __future__ import annotations

import json

import pytest

from aigc.cli import main

KEY = "sk-test-SECRET-doctor-99887766"


def doctor_json(capsys) -> dict:
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--json"])
    assert info.value.code == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.local
def test_doctor_reports_the_stack_and_backends(capsys):
    report = doctor_json(capsys)
    hw = report["hardware"]
    assert hw["python_version"] and hw["torch_version"] and hw["cuda_available"] in (True, False)
    assert hw["ram_total_bytes"] > 0 and hw["model"]["parameters"] > 100_000_000
    backends = {b["name"]: b for b in report["backends"]}
    assert backends["local"]["usable"] and not backends["openai"]["usable"]
    assert report["default_backend"] == "local" and report["api_key_configured"] is False


def test_doctor_says_a_key_is_configured_but_never_shows_it(capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    report = doctor_json(capsys)
    assert report["api_key_configured"] is True and report["default_backend"] == "openai"
    with pytest.raises(SystemExit):
        main(["doctor"])
    text = capsys.readouterr().out
    assert "configured" in text and KEY not in text and KEY not in json.dumps(report)


def test_doctor_says_which_backends_work_and_how_to_get_the_others(capsys):
    report = doctor_json(capsys)
    assert report["hardware"]["python_version"] and report["hardware"]["ram_total_bytes"] > 0
    backends = {b["name"]: b for b in report["backends"]}
    assert {"local", "openai", "fake"} <= set(backends) and not backends["openai"]["usable"]
    if not backends["local"]["usable"]:  # a venv with only the base install
        assert "pip install" in backends["local"]["note"]
