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
