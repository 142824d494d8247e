"""Settings, resolved in one place with one precedence.

    explicit argument  >  config file  >  environment  >  default

The config file is TOML at ``<user config dir>/aigc/config.toml`` (``aigc doctor`` prints the path), or the
file named by ``AIGC_CONFIG``. Its keys are the field names of :class:`Settings`. The environment is read
only here: ``AIGC_<FIELD>`` for every field, plus ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import ConfigError

APP = "aigc"


class Settings(BaseModel):
    """Everything a client needs to know. Unset (None) fields fall back to the backend's defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: str | None = Field(None, description="openai, local, fake or a registered name; None picks openai "
                                "when an API key or base URL is configured, else local")
    model: str | None = Field(None, description="model name; None uses the backend's default")
    api_key: SecretStr | None = None
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    base_urls: list[str] | None = Field(None, description="several OpenAI-compatible servers (replicas) to spread "
                                        "requests over, with health checks; a list, or commas in AIGC_BASE_URLS")
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(None, gt=0, description="cap on output tokens per request")
    timeout: float = Field(60.0, gt=0, description="seconds for one attempt")
    deadline: float = Field(300.0, gt=0, description="seconds for a call, retries included")
    max_attempts: int = Field(6, ge=1, description="attempts per request, the first included")
    max_retry_after: float = Field(60.0, ge=0, description="longest Retry-After we agree to wait")
    max_reasks: int = Field(2, ge=0, description="re-asks when structured output does not validate")
    templates_dir: Path | None = None
    models_file: Path | None = Field(None, description="TOML model table that extends/overrides the built-in one")
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP)))
    cache_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir(APP)))
    ledger: bool = Field(True, description="record every request's usage in the SQLite ledger")
    ledger_prompts: bool = Field(False, description="also store prompts in the ledger (opt-in)")
    device: str | None = Field(None, description="local backend: auto, cpu, cuda, cuda:1, mps")
    dtype: str | None = Field(None, description="local backend: auto, float32, float16, bfloat16")
    max_total_tokens: int | None = Field(None, gt=0, description="budget: tokens a client may use in total")
    max_cost_usd: float | None = Field(None, gt=0, description="budget: money a client may spend in total")
    rpm: float | None = Field(None, gt=0, description="requests per minute this client may send")
    tpm: float | None = Field(None, gt=0, description="tokens per minute (prompt + max output) it may send")
    concurrency: int = Field(4, ge=1, le=512, description="requests in flight at once for map and long inputs")
    fallback: list[str] = Field(default_factory=list, description="backends (or backend/model) that take over, in "
                                "order, when retries run out on transient errors or the quota is exhausted")
    fallback_cooldown: float = Field(30.0, ge=0, description="seconds a failed-over backend is skipped before "
                                     "it is tried again")
    redact: bool = Field(False, description="replace e-mail addresses, phone, card and account numbers with "
                         "placeholders before sending; put them back in the output")
    redact_region: str | None = Field(None, pattern=r"^[A-Za-z]{2}$", description="region for phone numbers "
                                      "written without a country code, e.g. DE, US")
    moderate: bool = Field(False, description="check input and output with the moderation endpoint")
    moderation_model: str = Field("omni-moderation-latest", description="the moderation endpoint's model")
    moderation_thresholds: dict[str, float] = Field(default_factory=dict, description="category -> score at "
                                                    "or above which an item is stopped (else the endpoint's flag)")

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback_list(cls, value: Any) -> Any:
        """``AIGC_FALLBACK=local,openai/gpt-4o-mini`` (one string) is a list too."""
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("moderation_thresholds", mode="before")
    @classmethod
    def _threshold_pairs(cls, value: Any) -> Any:
        """``violence=0.5,hate=0.3`` (one string, e.g. from the environment) is a table too."""
        if not isinstance(value, str):
            return value
        pairs = [p.partition("=") for p in value.split(",") if p.strip()]
        return {k.strip(): v.strip() for k, _, v in pairs}

    @field_validator("base_urls", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [u.strip() for u in value.split(",")]
        if isinstance(value, list) and (not value or not all(isinstance(u, str) and u.strip() for u in value)):
            raise ValueError("needs one or more server URLs")
        return value

    @field_validator("backend", "model", "base_url", "device", "dtype")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; give a value or leave it out")
        return value

    def __repr__(self) -> str:  # pydantic already masks SecretStr; keep it short too, and the URL's secrets
        from .redact import redact_url

        def shown(k: str, v: Any) -> Any:
            if k == "base_url":
                return redact_url(v)
            return [redact_url(u) for u in v] if k == "base_urls" else v

        fields = ", ".join(f"{k}={shown(k, v)!r}" for k, v in self.__dict__.items() if v is not None)
        return f"Settings({fields})"

    __str__ = __repr__

    @property
    def key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    def resolved_backend(self) -> str:
        if self.backend:
            return self.backend
        return "openai" if (self.api_key or self.base_url or self.base_urls) else "local"


_ENV_ALIASES = {"api_key": ("OPENAI_API_KEY",), "base_url": ("OPENAI_BASE_URL",)}
# Earlier names of settings, still accepted everywhere a setting is read.
OLD_NAMES = {"max_tokens": "max_output_tokens", "budget_tokens": "max_total_tokens", "budget_usd": "max_cost_usd"}


def _renamed(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        new = OLD_NAMES.get(name, name)
        if new not in out or out[new] is None:
            out[new] = value
    return out


def default_config_file(env: Mapping[str, str]) -> Path:
    if env.get("AIGC_CONFIG"):
        return Path(env["AIGC_CONFIG"]).expanduser()
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in [*Settings.model_fields, *OLD_NAMES]:
        value = env.get(f"AIGC_{name.upper()}")
        if value is None:
            value = next((env[a] for a in _ENV_ALIASES.get(name, ()) if env.get(a)), None)
        if value not in (None, ""):
            out[name] = value
    return _renamed(out)


def _from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(Settings.model_fields) - set(OLD_NAMES))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}; see `aigc doctor` for the known ones")
    return _renamed(data)


def load_settings(
    explicit: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve settings: explicit > config file > environment > defaults.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the environment entirely.
    """
    env = os.environ if env is None else env
    path = config_file or default_config_file(env)
    merged: dict[str, Any] = {}
    merged.update(_from_env(env))
    merged.update(_from_file(path))
    merged.update({k: v for k, v in _renamed(explicit or {}).items() if v is not None})
    return validated(merged)


def validated(values: Mapping[str, Any]) -> Settings:
    """Settings from plain values, checked; a bad value is a ConfigError naming the setting."""
    try:
        return Settings(**values)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {where}: {message}") from None


def updated(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """``settings`` with ``changes`` (None values ignored), validated like every other path."""
    changes = {k: v for k, v in _renamed(changes).items() if v is not None}
    if not changes:
        return settings
    unknown = sorted(set(changes) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    values = {name: getattr(settings, name) for name in Settings.model_fields}
    return validated({**values, **changes})
