"""The one link between ``aigc tune local --eval SUITE.toml`` and ``aigc eval`` (built apart from tune).

After training, the suite runs with two candidates made from its first one (same task or template, vars and
parameters): the base model and the tuned folder, both on the local backend, the base as the baseline. The
paired part of the eval report (scores per candidate, and the comparisons with their paired tests) goes into
the model card. This uses aigc eval's public API, ``load_suite`` and ``Evaluation``; without the eval extra,
``--eval`` is refused before training starts, with a message saying what to install.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendUnavailable, InputError

__all__ = ["check_suite", "compare"]

def _module() -> Any:
    try:
        import aigc.eval as module
    except ImportError as e:
        raise BackendUnavailable(f"--eval needs aigc's eval extra ({e.name} is not installed): "
                                 "pip install 'aigc-toolkit[eval]'") from None
    return module


def check_suite(suite: str | Path) -> None:
    """Fail before training when the suite cannot be run afterwards."""
    if not Path(suite).is_file():
        raise InputError(f"{suite}: no such eval suite file")
    _module().load_suite(suite)  # a broken suite is reported now, not after an hour of training


def compare(suite: str | Path, *, base: str, tuned: str, settings: Settings) -> dict[str, Any]:
    """The suite run on the base model and on the tuned folder; the report's paired summary."""
    module = _module()
    loaded = module.load_suite(suite)
    model = loaded.candidates[0]
    candidates = [dataclasses.replace(model, name=name, backend="local", model=where, base_url=None)
                  for name, where in (("base", base), ("tuned", tuned))]
    loaded = dataclasses.replace(loaded, candidates=candidates, baseline="base")
    report = asyncio.run(module.Evaluation(loaded).run())
    return {"suite": str(suite), "candidates": report.get("candidates", []),
            "comparisons": report.get("comparisons", []), "report_path": report.get("report_path")}
