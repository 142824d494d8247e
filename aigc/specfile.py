"""Reading a TOML file that a pydantic model describes (job files, eval suites), with one clear line per mistake,
and the tables both kinds share."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

__all__ = ["read_spec", "Section", "LimitsSpec", "BudgetSpec"]

M = TypeVar("M", bound=BaseModel)


def read_spec(path: str | Path, model: type[M], *, kind: str, docs: str) -> tuple[Path, M]:
    """The file's absolute path and its contents as ``model``; a :class:`ConfigError` naming the file, the
    place and what is wrong (``kind`` names the file in messages, ``docs`` is the page on its format)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: no such {kind} file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        spec = model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (see {docs} for the {kind} file format)"
        elif err["type"] == "missing":
            msg = "missing"
        raise ConfigError(f"{path}: {where(err['loc'])}: {msg}") from None
    return path.resolve(), spec


def where(loc: tuple) -> str:
    """A place in the file as its reader would name it: ``[section] key``."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2:
        return f"[{parts[0]}] {'.'.join(parts[1:])}"
    return parts[0] if parts else "the file"


class Section(BaseModel):
    """A table of a spec file: a key it does not know is a mistake."""

    model_config = ConfigDict(extra="forbid")


class LimitsSpec(Section):
    concurrency: int = Field(4, ge=1, le=512)
    rpm: float | None = Field(None, gt=0, description="requests per minute")
    tpm: float | None = Field(None, gt=0, description="tokens per minute: prompt plus max output")


class BudgetSpec(Section):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_cost_usd: float | None = Field(None, ge=0)
    # ``max_tokens`` is its earlier name, still accepted.
    max_total_tokens: int | None = Field(None, ge=0, validation_alias=AliasChoices("max_total_tokens", "max_tokens"))
