"""The OpenAI files, fine-tuning and moderation calls tune makes, through aigc's one retry layer.

The SDK client has ``max_retries=0``; :func:`aigc.retry.call_with_retry` retries what is transient and
:func:`aigc.backends.openai.translate_error` turns SDK errors into aigc's. Two things are special here:

* a 403 from these endpoints nearly always means the organisation may no longer fine-tune (OpenAI is
  winding self-serve fine-tuning down), so it says that and points at ``aigc tune local``;
* job creation is not idempotent (a retried create after a timeout can start a second job), so every job
  carries ``metadata={"aigc_run": <run id>}`` and a retry first looks the run up before creating again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendError, ConfigError, PermissionDenied
from ..retry import RetryPolicy, call_with_retry

__all__ = ["FineTuningAPI", "RUN_KEY"]

RUN_KEY = "aigc_run"
_CLOSED = ("OpenAI refused fine-tuning for this organisation (HTTP 403): {msg} OpenAI is winding down "
           "self-serve fine-tuning (no new jobs for organisations without fine-tuned inference in the last "
           "60 days since 2026-07-02, none for anybody from 2027-01-06); fine-tune locally instead: "
           "aigc tune local DATA.jsonl")


class FineTuningAPI:
    """Thin, retried calls; each returns the SDK object as a plain dict."""

    def __init__(self, client: Any, *, key: str | None, where: str, policy: RetryPolicy | None = None,
                 moderation_model: str = "omni-moderation-latest") -> None:
        self.client = client
        self.key = key
        self.where = where
        self.policy = policy or RetryPolicy()
        self.moderation_model = moderation_model

    @classmethod
    def from_settings(cls, settings: Settings, *, client: Any = None,
                      policy: RetryPolicy | None = None) -> FineTuningAPI:
        if client is None:
            if not settings.key and not settings.base_url:
                raise ConfigError("hosted fine-tuning needs an OpenAI API key: set OPENAI_API_KEY or api_key in "
                                  "the config file (or fine-tune locally: aigc tune local)")
            import openai

            client = openai.OpenAI(api_key=settings.key or "not-needed", base_url=settings.base_url,
                                   max_retries=0, timeout=settings.timeout)
        policy = policy or RetryPolicy(max_attempts=settings.max_attempts, deadline=settings.deadline,
                                       max_retry_after=settings.max_retry_after)
        return cls(client, key=settings.key, where=settings.base_url or "the OpenAI API", policy=policy,
                   moderation_model=settings.moderation_model)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    # -- plumbing -------------------------------------------------------------------------------------------
    def _translate(self, e: Exception) -> Exception:
        from ..backends.openai import translate_error

        error = translate_error(e, key=self.key, where=self.where)
        if isinstance(error, PermissionDenied):
            msg = error.message.split(": ", 1)[-1]
            return PermissionDenied(_CLOSED.format(msg=msg), status_code=error.status_code,
                                    request_id=error.request_id, code=error.code)
        return error

    def _call(self, fn: Callable[[float | None], Any]) -> Any:
        import openai

        from ..backends.openai.errors import is_transport_error

        def attempt(timeout: float | None) -> Any:
            try:
                return fn(timeout)
            except openai.OpenAIError as e:
                raise self._translate(e) from None
            except Exception as e:
                if is_transport_error(e):
                    raise self._translate(e) from None
                raise

        result, _ = call_with_retry(attempt, self.policy)
        return result

    @staticmethod
    def _dump(obj: Any) -> dict[str, Any]:
        return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)

    # -- files ----------------------------------------------------------------------------------------------
    def upload(self, path: Path) -> dict[str, Any]:
        data = Path(path).read_bytes()
        return self._dump(self._call(lambda t: self.client.files.create(
            file=(Path(path).name, data), purpose="fine-tune", timeout=t)))

    def file(self, file_id: str) -> dict[str, Any]:
        return self._dump(self._call(lambda t: self.client.files.retrieve(file_id, timeout=t)))

    def wait_processed(self, file_id: str, *, poll: float, sleep: Callable[[float], None] = time.sleep,
                       max_wait: float = 1800.0) -> dict[str, Any]:
        """Poll an uploaded file until the service has processed it (or refused it)."""
        started = time.monotonic()
        while True:
            info = self.file(file_id)
            status = info.get("status")
            if status == "processed":
                return info
            if status in ("error", "deleted"):
                detail = info.get("status_details") or "no reason given"
                raise BackendError(f"{self.where} could not process the training file {file_id}: {detail}")
            if time.monotonic() - started > max_wait:
                raise BackendError(f"the training file {file_id} was still {status!r} after {max_wait:.0f}s; "
                                   "run the same command again later to continue")
            sleep(poll)

    # -- jobs -----------------------------------------------------------------------------------------------
    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """The job created for ``run_id`` (found by its metadata), if there is one."""
        job = self._call(lambda t: self._lookup(run_id, t))
        return None if job is None else self._dump(job)

    def _lookup(self, run_id: str, timeout: float | None) -> Any:
        page = self.client.fine_tuning.jobs.list(metadata={RUN_KEY: run_id}, limit=10, timeout=timeout)
        return next((j for j in page.data if (j.metadata or {}).get(RUN_KEY) == run_id), None)

    def create_job(self, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Create the run's job once: an attempt after a failed one first looks for a job it did create."""
        tries = 0

        def create(timeout: float | None) -> Any:
            nonlocal tries
            tries += 1
            if tries > 1 and (found := self._lookup(run_id, timeout)) is not None:
                return found
            metadata = {**params.get("metadata", {}), RUN_KEY: run_id}
            return self.client.fine_tuning.jobs.create(**{**params, "metadata": metadata}, timeout=timeout)

        return self._dump(self._call(create))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._dump(self._call(lambda t: self.client.fine_tuning.jobs.retrieve(job_id, timeout=t)))

    def events(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The job's latest events, oldest first."""
        page = self._call(lambda t: self.client.fine_tuning.jobs.list_events(job_id, limit=limit, timeout=t))
        return [self._dump(e) for e in reversed(page.data)]

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        page = self._call(lambda t: self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=20, timeout=t))
        return sorted((self._dump(c) for c in page.data), key=lambda c: c.get("step_number") or 0)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._dump(self._call(lambda t: self.client.fine_tuning.jobs.cancel(job_id, timeout=t)))

    # -- moderation -----------------------------------------------------------------------------------------
    def moderate(self, texts: list[str]) -> list[list[str]]:
        """For each text, the moderation categories it was flagged for (empty: not flagged), read as aigc's
        moderation reads the endpoint (:func:`aigc.moderation.verdict_from`), with the configured model."""
        from ..moderation import verdict_from

        answer = self._call(lambda t: self.client.moderations.create(
            model=self.moderation_model, input=texts, timeout=t))
        verdicts = [verdict_from(r) for r in answer.results]
        return [sorted(k for k, hit in v.categories.items() if hit) if v.flagged else [] for v in verdicts]
