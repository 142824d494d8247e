"""What ``aigc doctor`` reports: the machine, the stack, the configuration and which backends work now."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from .backends.local.hardware import HardwareReport, probe
from .config import Settings, default_config_file
from .redact import redact_url


class BackendStatus(BaseModel):
    name: str
    usable: bool
    default_model: str
    note: str = ""


class DataFile(BaseModel):
    """One of aigc's own files: the usage ledger or the response cache."""

    name: str
    path: str
    exists: bool
    problem: str | None = Field(None, description="what is wrong with it (damaged, unreadable); None: fine")


def check_data_files(settings: Settings) -> list[DataFile]:
    """The ledger and the cache, each read once without changing it."""
    from .cache import CACHE_FILE
    from .db import inspect_file
    from .ledger import LEDGER_FILE

    out = []
    for name, file, fix in (("ledger", LEDGER_FILE, "move it aside and aigc starts a new ledger"),
                            ("cache", CACHE_FILE, "delete it and aigc starts a new cache")):
        path = settings.data_dir / file
        problem = inspect_file(path)
        out.append(DataFile(name=name, path=str(path), exists=path.exists(),
                            problem=f"{problem}; {fix}" if problem else None))
    return out


class DoctorReport(BaseModel):
    config_file: str
    config_file_exists: bool
    data_dir: str
    cache_dir: str
    api_key_configured: bool = Field(description="whether a key is set; never the key itself")
    base_url: str | None
    default_backend: str
    backends: list[BackendStatus]
    hardware: HardwareReport
    data_files: list[DataFile] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


def diagnose(settings: Settings) -> DoctorReport:
    """Look, without sending a request or loading a model."""
    hardware = probe(settings)
    config_file = default_config_file(os.environ)
    key = settings.api_key is not None
    hosted = key or settings.base_url is not None
    base_url = redact_url(settings.base_url)
    backends = [
        BackendStatus(
            name="openai", usable=hosted, default_model=settings.model if settings.resolved_backend() == "openai"
            and settings.model else "gpt-4o-mini",
            note=(f"OpenAI-compatible server at {base_url}" if base_url else "the OpenAI API")
            if hosted else "no API key: set OPENAI_API_KEY or api_key in the config file"),
        BackendStatus(
            name="local", usable=hardware.local_extra_installed and not hardware.model.error,
            default_model=hardware.model.name,
            note=hardware.install_hint or hardware.model.error
            or f"{hardware.device or 'cpu'}, {hardware.dtype or 'float32'}"
            + ("" if hardware.model.fits is not False else "; the model may not fit in memory")),
        BackendStatus(name="fake", usable=True, default_model="fake-model", note="scripted replies for tests"),
    ]
    files = check_data_files(settings)
    return DoctorReport(
        config_file=str(config_file), config_file_exists=config_file.is_file(),
        data_dir=str(settings.data_dir), cache_dir=str(settings.cache_dir),
        api_key_configured=key, base_url=base_url, default_backend=settings.resolved_backend(),
        backends=backends, hardware=hardware, data_files=files,
        problems=[*hardware.problems, *(f"{f.name} {f.path}: {f.problem}" for f in files if f.problem)],
    )
