"""Code a declaration names as ``module:attr`` (a task's flow, a backend, a serving backend), imported when used."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_target"]


def load_target(target: str) -> Any:
    """The object ``target`` (``"package.module:name"``) names, its module imported now; ImportError and
    AttributeError as Python raises them."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
