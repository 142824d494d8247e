"""Jinja2 prompt templates: built-ins shipped with aigc, overridden or extended from a user directory.

A template is a ``NAME.j2`` file: TOML front matter between ``+++`` lines (description, defaults such as
``temperature`` and ``max_output_tokens``, and default variables under ``[vars]``), then a Jinja body with a
``system`` block and a ``user`` block, one chat message each::

    +++
    description = "Summarize a text"
    temperature = 0.3
    [vars]
    length = "3 sentences"
    +++
    {% block system %}You are a careful editor.{% endblock %}
    {% block user %}Summarize in {{ length }}:

    {{ text }}{% endblock %}

Rendering is sandboxed with ``StrictUndefined``: a missing variable is an error naming it, and attribute
tricks such as ``''.__class__`` are refused. Input text is always passed as a variable, never compiled as
template source. A file in the user directory with a built-in's name replaces it; templates may
``{% extends "summarize.j2" %}``, which resolves user-first.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InputError, TemplateError, TemplateVariableMissing
from .types import Message

SUFFIX = ".j2"
RECHECK_S = 1.0
_FRONT = re.compile(r"\A\+\+\+[ \t]*\n(.*?)\n\+\+\+[ \t]*\n?", re.S)
_UNDEFINED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def builtin_dir() -> Path:
    """Built-in templates: inside the installed wheel, or the repository's top-level folder."""
    here = Path(__file__).resolve().parent
    packaged = here / "_templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


def split_front_matter(source: str, name: str) -> tuple[dict[str, Any], str]:
    match = _FRONT.match(source)
    if not match:
        return {}, source
    try:
        meta = tomllib.loads(match.group(1))
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(f"template {name!r}: front matter is not valid TOML: {e}", template=name) from None
    return meta, source[match.end():]


@dataclass(frozen=True)
class Template:
    """A loaded template: its metadata and a renderer producing chat messages."""

    name: str
    path: Path
    origin: str  # "builtin" or "user"
    meta: dict[str, Any] = field(default_factory=dict)
    parents: tuple[str, ...] = ()  # templates it extends, nearest first
    variables: frozenset[str] = frozenset()  # the variables its text uses (its parents' included)
    _library: TemplateLibrary | None = field(default=None, repr=False, compare=False)

    @property
    def description(self) -> str:
        return str(self.meta.get("description", ""))

    @property
    def defaults(self) -> dict[str, Any]:
        """Generation defaults (temperature, max_output_tokens, ...) declared in the front matter."""
        from .config import OLD_NAMES
        from .tasks import TASK_KEYS

        return {OLD_NAMES.get(k, k): v for k, v in self.meta.items() if k not in ("description", "vars", *TASK_KEYS)}

    @property
    def default_vars(self) -> dict[str, Any]:
        return dict(self.meta.get("vars", {}))

    def refuse_blank(self, given: dict[str, Any]) -> None:
        """InputError for a value given as blank text to a variable this template uses: a default may be
        blank, but a value someone gives is meant to say something (``--var to=" "`` is a mistake)."""
        blank = sorted(k for k, v in given.items() if k in self.variables and isinstance(v, str) and not v.strip())
        if blank:
            raise InputError(f"template {self.name!r}: {blank[0]} is empty; give a value or leave it out")

    def render(self, **variables: Any) -> list[Message]:
        """The system and user messages for these variables."""
        assert self._library is not None
        return self._library.render(self, variables)


def _check_name(name: str) -> None:
    """Template names are names: a path would read any file on disk."""
    if not _NAME.fullmatch(name.removesuffix(SUFFIX)):
        raise TemplateError(f"{name!r} is not a template name; names use letters, digits, '-', '_' and '.' "
                            "(no paths): see `aigc templates list`", template=name)


def _spellings(name: str) -> list[str]:
    """The name, then the template of the task it names (old spellings such as ``qa`` are task aliases)."""
    from .tasks import find_task

    task = find_task(name)
    return [name] if task is None or task.template in (None, name) else [name, task.template]


class _Loader(BaseLoader):
    def __init__(self, library: TemplateLibrary) -> None:
        self.library = library

    def get_source(self, environment, template):
        path = self.library.find(template.removesuffix(SUFFIX))
        if path is None:
            raise TemplateNotFound(template)
        _, body = split_front_matter(path.read_text(encoding="utf-8"), template)
        mtime = path.stat().st_mtime
        return body, str(path), lambda: path.stat().st_mtime == mtime


class TemplateLibrary:
    """Finds templates in the user directory first, then among the built-ins."""

    def __init__(self, user_dir: Path | None = None) -> None:
        self.user_dir = Path(user_dir).expanduser() if user_dir else None
        self.builtin_dir = builtin_dir()
        self._loaded: dict[tuple[Path, int, int], Template] = {}
        self._recent: dict[str, tuple[float, Template]] = {}
        self.env = ImmutableSandboxedEnvironment(
            loader=_Loader(self), undefined=StrictUndefined, autoescape=False,
            keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True,
            auto_reload=False,  # freshness is checked in get() (at most once a second), not on every render
        )

    def _dirs(self) -> list[tuple[str, Path]]:
        dirs = [("builtin", self.builtin_dir)]
        if self.user_dir is not None:
            dirs.insert(0, ("user", self.user_dir))
        return dirs

    def find(self, name: str) -> Path | None:
        if not _NAME.fullmatch(name):
            return None
        for _, folder in self._dirs():
            path = folder / f"{name}{SUFFIX}"
            if path.is_file():
                return path
        return None

    def names(self) -> list[Template]:
        """Every available template, user ones shadowing built-ins of the same name."""
        seen: dict[str, Template] = {}
        for origin, folder in reversed(self._dirs()):
            if folder.is_dir():
                for path in sorted(folder.glob(f"*{SUFFIX}")):
                    seen[path.stem] = self._load(path.stem, path, origin)
        return [seen[k] for k in sorted(seen)]

    def get(self, name: str) -> Template:
        # Looked up again at most once a second, so edits to template files are picked up while a
        # long-running process stays cheap per call.
        hit = self._recent.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < RECHECK_S:
            return hit[1]
        _check_name(name)
        for candidate in _spellings(name.removesuffix(SUFFIX)):
            for origin, folder in self._dirs():
                path = folder / f"{candidate}{SUFFIX}"
                if path.is_file():
                    template = self._load(candidate, path, origin)
                    self._recent[name] = (now, template)
                    return template
        known = ", ".join(t.name for t in self.names()) or "none"
        raise TemplateError(f"no template named {name!r}; available: {known}", template=name)

    def source(self, name: str) -> str:
        return self.get(name).path.read_text(encoding="utf-8")

    def _load(self, name: str, path: Path, origin: str) -> Template:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        cached = self._loaded.get(key)
        if cached is not None:
            return cached
        if any(t.path == path for t in self._loaded.values()):
            self.env.cache.clear()  # a template file changed: compile again from the new source
        front, body = split_front_matter(path.read_text(encoding="utf-8"), name)
        parent = self._extends(body)
        parents: tuple[str, ...] = ()
        used = self._uses(body)
        if parent and parent.removesuffix(SUFFIX) != name:  # inherit the parent's defaults and variables
            base = self.get(parent.removesuffix(SUFFIX))
            front = {**base.meta, **front, "vars": {**base.meta.get("vars", {}), **front.get("vars", {})}}
            parents = (parent, *base.parents)
            used |= base.variables
        template = Template(name=name, path=path, origin=origin, meta=front, parents=parents, variables=used,
                            _library=self)
        self._loaded[key] = template
        return template

    def _uses(self, body: str) -> frozenset[str]:
        try:
            return frozenset(meta.find_undeclared_variables(self.env.parse(body)))
        except TemplateSyntaxError:
            return frozenset()  # reported with its line number when rendered

    def _extends(self, body: str) -> str | None:
        try:
            node = next(iter(self.env.parse(body).find_all(nodes.Extends)), None)
        except TemplateSyntaxError:
            return None  # reported with its line number when rendered
        if node is None or not isinstance(node.template, nodes.Const):
            return None
        return str(node.template.value)

    def render(self, template: Template, variables: dict[str, Any]) -> list[Message]:
        values = {**template.default_vars, **{k: v for k, v in variables.items() if v is not None}}
        try:
            compiled = self.env.get_template(template.name + SUFFIX)
            context = compiled.new_context(values)
            for parent in map(self.env.get_template, template.parents):
                for name, block in parent.blocks.items():  # what {% extends %} does, so super() works
                    context.blocks.setdefault(name, []).append(block)
            messages = []
            for role in ("system", "user"):
                chain = context.blocks.get(role)
                if chain:
                    text = "".join(chain[0](context)).strip()
                    if text:
                        messages.append(Message(role=role, content=text))
        except UndefinedError as e:
            missing = _UNDEFINED.search(str(e))
            if missing:
                raise TemplateVariableMissing(template.name, missing.group(1)) from None
            raise TemplateError(f"template {template.name!r}: {e}", template=template.name) from None
        except SecurityError as e:
            raise TemplateError(f"template {template.name!r} tried something the sandbox forbids ({e}); "
                                "refused", template=template.name) from None
        except TemplateSyntaxError as e:
            raise TemplateError(f"template {template.name!r} line {e.lineno}: {e.message}",
                                template=template.name) from None
        except TemplateNotFound as e:
            raise TemplateError(f"template {template.name!r} refers to missing template {e.name!r}",
                                template=template.name) from None
        if not any(m.role == "user" for m in messages):
            raise TemplateError(f"template {template.name!r} has no {{% block user %}}; add one",
                                template=template.name)
        return messages
