"""Names for fine-tuned models: ``aigc tune alias my-news ft:gpt-4o-mini-2024-07-18:acme:news:abc`` and
then ``--model my-news`` anywhere (library, CLI, batch jobs, the server).

An alias points at a hosted ``ft:`` id (or any hosted model the table knows) or at a local result folder.
It records the prices of the model it names and the day its base model retires, after which a hosted
fine-tune stops answering. Aliases live in ``<data_dir>/tune.db``.

The client resolves a name with :func:`apply` (one call where it settles its settings); :func:`resolve`
answers for one name. Both are cheap: a read-only query, and nothing at all when no alias was ever made.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InputError
from . import store_path

if TYPE_CHECKING:  # the client imports this module: what it needs is imported only once an alias exists
    from ..config import Settings
    from ..models import ModelTable
    from .types import Alias

__all__ = ["set_alias", "remove_alias", "list_aliases", "resolve", "apply"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The aliases table's columns, in the order of :func:`_row`.
_COLUMNS = ("name", "model", "backend", "base_model", "input_price", "output_price", "retires", "created")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM aliases"


def _row(row: Any) -> Alias:
    from .types import Alias

    name, model, backend, base, input_price, output_price, retires, created = tuple(row)
    return Alias(name=name, model=model, backend=backend, base_model=base, input_price=input_price,
                 output_price=output_price, retires=date.fromisoformat(retires) if retires else None,
                 created=created)


def resolve(name: str, data_dir: Path | str) -> Alias | None:
    """The alias called ``name``, or None (also when no alias store exists yet). Answers are remembered
    until the store changes (its file or its write-ahead log), so a request naming a model costs a stat,
    not a query."""
    if not name or not _NAME.fullmatch(name):
        return None
    path = store_path(data_dir)
    try:
        stamp = tuple((s.st_mtime_ns, s.st_size) for s in (path.stat(), *_wal_stat(path)))
    except OSError:
        return None
    known = _RESOLVED.get(str(path))
    if known is None or known[0] != stamp:
        known = _RESOLVED[str(path)] = (stamp, {})
    if name not in known[1]:
        known[1][name] = _lookup(path, name)
    return known[1][name]


# store path -> (its stamp, {name: alias or None})
_RESOLVED: dict[str, tuple[tuple, dict[str, Alias | None]]] = {}


def _wal_stat(path: Path) -> list[Any]:
    try:
        return [Path(f"{path}-wal").stat()]
    except OSError:
        return []


def _lookup(path: Path, name: str) -> Alias | None:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # a store from before aliases, or one being created: no alias yet
    return _row(row) if row else None


def apply(settings: Settings) -> Settings:
    """``settings`` with an aliased ``model`` replaced by what it names (and the backend it needs)."""
    alias = resolve(settings.model or "", settings.data_dir)
    if alias is None:
        return settings
    if settings.backend is not None and settings.backend != alias.backend:
        raise ConfigError(f"model {alias.name!r} is an alias of the {alias.backend} model {alias.model}; "
                          f"use --backend {alias.backend} (or no --backend)")
    return settings.model_copy(update={"model": alias.model, "backend": alias.backend})


def _describe(model: str, table: ModelTable) -> tuple[str, str, str | None, float | None, float | None, date | None]:
    """(model as stored, backend, base model, input price, output price, retirement day) for ``model``."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder} is not a model folder (no config.json); give a result of aigc tune local")
        from .card import read_card

        card = read_card(folder)
        return str(folder.resolve()), "local", card.get("base_model") if card else None, 0.0, 0.0, None
    info = table.lookup(model)
    if model.startswith("ft:"):
        base = model.split(":")[1]
        if not info.known:
            raise InputError(f"the base model {base!r} of {model} is not in the model table; add it to a "
                             "models_file so its prices are known")
        return model, "openai", base, info.input_price, info.output_price, info.retires
    if info.known and info.backend == "openai":
        return model, "openai", None, info.input_price, info.output_price, info.retires
    raise InputError(f"{model!r} is neither an ft: model id, a local model folder nor a hosted model the model "
                     "table knows")


def set_alias(name: str, model: str, *, data_dir: Path | str, models_file: Path | None = None) -> Alias:
    """Save (or replace) ``name`` for ``model``; return the alias as stored."""
    if not _NAME.fullmatch(name):
        raise InputError(f"alias {name!r}: use letters, digits, '.', '_' and '-' (at most 64), starting with "
                         "a letter or digit")
    from ..models import ModelTable

    table = ModelTable.cached(models_file)
    if table.lookup(name).known:
        raise InputError(f"{name!r} is already a model name; pick another alias")
    stored, backend, base, input_price, output_price, retires = _describe(model, table)
    from ..db import utc_stamp
    from .store import open_store

    with open_store(data_dir) as db:
        db.execute(
            f"INSERT INTO aliases ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
            f"ON CONFLICT (name) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS[1:])}",
            (name, stored, backend, base, input_price, output_price, retires.isoformat() if retires else None,
             utc_stamp(seconds=True)))
    found = resolve(name, data_dir)
    assert found is not None
    return found


def remove_alias(name: str, *, data_dir: Path | str) -> bool:
    """Forget ``name``; False when there was no such alias."""
    if not store_path(data_dir).is_file():
        return False
    from .store import open_store

    with open_store(data_dir) as db, db.transaction() as conn:
        gone = conn.execute("DELETE FROM aliases WHERE name = ?", (name,)).rowcount
    return bool(gone)


def list_aliases(*, data_dir: Path | str) -> list[Alias]:
    if not store_path(data_dir).is_file():
        return []
    from .store import open_store

    with open_store(data_dir) as db:
        rows = db.execute(f"{_SELECT} ORDER BY name")
    return [_row(r) for r in rows]
