"""The public face: what `import aigc` offers, and what it must not drag in."""

from __future__ import annotations

import subprocess
import sys

import aigc


def test_every_public_name_resolves():
    for name in aigc.__all__:
        assert getattr(aigc, name) is not None, name
    assert aigc.Budget.__module__ == "aigc.budget"


def test_errors_form_one_tree():
    errors = [getattr(aigc, n) for n in aigc.__all__ if isinstance(getattr(aigc, n), type)
              and issubclass(getattr(aigc, n), Exception)]
    assert len(errors) > 15 and all(issubclass(e, aigc.AigcError) for e in errors)
    assert issubclass(aigc.RateLimited, aigc.TransientError) and not issubclass(aigc.QuotaExhausted,
                                                                               aigc.TransientError)


def test_import_is_light():
    code = "import sys, aigc; print(sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


# The public API, as the README documents it. A name added to or dropped from aigc/__init__.py must be
# added here too, on purpose.
EXPORTED = {
    # the one-call functions and the default client
    "summarize", "translate", "answer", "news", "write_news", "chat", "classify", "sentiment", "generate",
    "configure", "get_client",
    # clients, results and streams
    "Client", "AsyncClient", "TextStream", "AsyncTextStream", "Result", "Usage", "Message", "ChatRequest",
    "Completion", "StreamDelta",
    # configuration, retries, accounting, tasks
    "Settings", "load_settings", "RetryPolicy", "Budget", "RateGate", "Accounting", "Task", "Param",
    "register_task", "get_task",
    # conversations, classification, redaction
    "Conversation", "AsyncConversation", "Classification", "Redactor",
    # backends
    "Backend", "BaseBackend", "FakeBackend", "register_backend",
    # errors
    "AigcError", "ConfigError", "BackendUnavailable", "InputError", "OutputError", "TemplateError",
    "TemplateVariableMissing",
    "BudgetExceeded", "OutputInvalid", "FactCheckFailed", "ContentFlagged", "BackendError", "TransientError",
    "RateLimited", "ServerError",
    "RequestTimeout", "ConnectionFailed", "QuotaExhausted", "AuthenticationFailed", "PermissionDenied",
    "ModelNotFound", "BadRequest", "ContextLengthExceeded",
}


def test_the_exported_members_are_the_documented_ones():
    assert set(aigc.__all__) == EXPORTED and len(aigc.__all__) == len(EXPORTED)
    assert {n for n in dir(aigc) if not n.startswith("_")} >= EXPORTED


def test_the_command_line_imports_only_what_help_needs():
    code = ("import sys\nfrom aigc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = ('pydantic', 'jinja2', 'openai', 'asyncio', 'tiktoken', 'torch', 'aigc.client')\n"
            "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip() == "[]" and "summarize" in proc.stdout
