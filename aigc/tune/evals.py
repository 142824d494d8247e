"""The one link between ``aigc tune local --eval SUITE.toml`` and ``aigc eval`` (built apart from tune).

After training, the suite runs on the base model and on the tuned folder as two candidates, and the paired
result goes into the model card. The contract asked of :mod:`aigc.eval` is one function::

    aigc.eval.compare_candidates(suite: Path, candidates: dict[str, dict], *, settings) -> dict

with candidates ``{"base": {"backend": "local", "model": ...}, "tuned": {...}}``, returning a JSON-ready
summary (metrics per candidate and the paired test). Until that exists, ``--eval`` is refused before any
training starts, with a message saying so: nothing is pretended.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendUnavailable, InputError

__all__ = ["check_suite", "compare"]

_NEEDS = ("--eval needs aigc eval's compare_candidates(), which this aigc does not have yet; drop --eval and "
          "run the eval suite on the result yourself when it is available")


def _module() -> Any:
    if importlib.util.find_spec("aigc.eval") is None:
        raise BackendUnavailable(_NEEDS)
    module = importlib.import_module("aigc.eval")
    if not callable(getattr(module, "compare_candidates", None)):
        raise BackendUnavailable(_NEEDS)
    return module


def check_suite(suite: str | Path) -> None:
    """Fail before training when the suite cannot be run afterwards."""
    if not Path(suite).is_file():
        raise InputError(f"{suite}: no such eval suite file")
    _module()


def compare(suite: str | Path, *, base: str, tuned: str, settings: Settings) -> dict[str, Any]:
    """The suite's result for the base model and the tuned folder, paired."""
    candidates = {"base": {"backend": "local", "model": base}, "tuned": {"backend": "local", "model": tuned}}
    result = _module().compare_candidates(Path(suite), candidates, settings=settings)
    return {"suite": str(suite), **dict(result)}
