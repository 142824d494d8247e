"""``aigc.tune.hosted``: a fine-tuning job at OpenAI, safe to interrupt, honest about cost.

    validate → budget check → journal → upload → wait for processing → journal "creating" → create
    → follow (validating_files → queued → running → succeeded | failed | cancelled) → checkpoints → bill

Nothing is uploaded before the data is valid and its estimated cost fits the budget. The run is in the
journal before anything is sent; its state is updated at every step, so the same command run again
(after ``kill -9``, a reboot, a lost connection) takes the run over instead of starting another: the upload
is not repeated once recorded, and a job whose creation may have reached the server is found again by its
``metadata.aigc_run`` tag. The bill is the job's ``trained_tokens`` times the training price, written once
to the usage ledger.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..budget import Budget, Reservation
from ..config import Settings, load_settings
from ..errors import BudgetExceeded, ConfigError, InputError
from ..models import ModelTable
from .data import file_sha256
from .journal import TERMINAL, Journal
from .openai_api import FineTuningAPI
from .types import HostedEvent, HostedJob, TrainingDataInvalid
from .validation import validate

__all__ = ["hosted", "status", "cancel", "list_runs", "Follower"]

Progress = Callable[[HostedJob, HostedEvent | None], None]


def _key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def hosted(
    data: str | Path,
    *,
    model: str,
    suffix: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    learning_rate_multiplier: float | None = None,
    batch_size: int | None = None,
    max_cost_usd: float | None = None,
    budget: Budget | None = None,
    moderate: bool = False,
    wait: bool = True,
    again: bool = False,
    poll_interval: float = 10.0,
    progress: Progress | None = None,
    settings: Settings | None = None,
    api: FineTuningAPI | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> HostedJob:
    """Fine-tune ``model`` at OpenAI on ``data``; return the run as the journal records it.

    Running the same call again continues an unfinished run (``reattached=True``) or returns a finished one;
    ``again=True`` starts a new job anyway. ``wait=False`` returns once the job is created. ``moderate=True``
    runs every example through the moderation endpoint first (the service refuses flagged files).
    """
    settings = settings or load_settings()
    path = Path(data)
    api = api or FineTuningAPI.from_settings(settings)
    report = validate(path, model=model, epochs=epochs, settings=settings, moderate=moderate,
                      moderation=api.moderate)
    if report.target != "openai":
        raise ConfigError(f"{model!r} is not a hosted model the model table knows; for a local model use "
                          "aigc tune local, or add the model to a models_file")
    if not report.ok:
        raise TrainingDataInvalid(report)
    hyper = {k: v for k, v in (("n_epochs", report.epochs), ("learning_rate_multiplier", learning_rate_multiplier),
                               ("batch_size", batch_size)) if v is not None}
    digest = file_sha256(path)
    key = _key(data=digest, model=model, suffix=suffix, hyper=hyper, seed=seed, where=settings.base_url)
    reservation = None
    with Journal(settings.data_dir) as journal:
        prior = None if again else journal.latest(key)
        if prior is not None and prior.state not in ("failed", "cancelled"):
            job = prior.model_copy(update={"reattached": True})
        else:
            reservation = _check_budget(report.estimated_cost_usd, report.training_tokens, max_cost_usd, budget,
                                        settings, model)
            job = journal.begin(key=key, provider="openai", where=settings.base_url, model=model, suffix=suffix,
                                data_path=str(path.resolve()), data_sha256=digest, epochs=report.epochs,
                                estimated_tokens=report.training_tokens,
                                estimated_cost_usd=report.estimated_cost_usd, state="uploading")
        follower = Follower(api, journal, settings, progress=progress, poll_interval=poll_interval, sleep=sleep)
        if job.terminal:
            return job
        params: dict[str, Any] = {"model": model, "method": {"type": "supervised",
                                                             "supervised": {"hyperparameters": hyper}}}
        if suffix:
            params["suffix"] = suffix
        if seed is not None:
            params["seed"] = seed
        try:
            job = follower.start(job, path, params)
            if wait:
                job = follower.follow(job)
        finally:
            if reservation is not None and budget is not None:
                if job.terminal:  # what the job actually cost replaces the estimate
                    budget.commit(reservation, job.trained_tokens or 0, job.cost_usd)
                else:
                    budget.release(reservation)
        return job


def _check_budget(estimate: float | None, tokens: int, max_cost_usd: float | None, budget: Budget | None,
                  settings: Settings, model: str) -> Reservation | None:
    """BudgetExceeded before anything is uploaded when the estimated training cost could pass a cap."""
    cap = max_cost_usd if max_cost_usd is not None else settings.max_cost_usd
    if cap is not None:
        if estimate is None:
            raise BudgetExceeded(f"the training cost of {model} is unknown (no training price in the model table) "
                                 f"and the budget is ${cap:g}; add the price to a models_file", needed_tokens=tokens)
        if estimate > cap + 1e-9:
            raise BudgetExceeded(f"fine-tuning is estimated at ${estimate:,.4f} ({tokens:,} training tokens), "
                                 f"over the budget of ${cap:g}; nothing was uploaded", needed_tokens=tokens,
                                 needed_usd=estimate)
    if budget is not None:
        return budget.reserve(tokens, estimate)  # raises BudgetExceeded
    return None


class Follower:
    """Moves a journalled run forward: upload, create, follow, finish. Shared by hosted, status and cancel."""

    def __init__(self, api: FineTuningAPI, journal: Journal, settings: Settings, *, progress: Progress | None = None,
                 poll_interval: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.journal = journal
        self.settings = settings
        self.progress = progress
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.seen: set[str] = set()

    def _tell(self, job: HostedJob, event: HostedEvent | None = None) -> None:
        if self.progress is not None:
            self.progress(job, event)

    def _save(self, job: HostedJob, **values: Any) -> HostedJob:
        saved = self.journal.update(job.run_id, **values)
        return saved.model_copy(update={"reattached": job.reattached})

    def start(self, job: HostedJob, path: Path, params: dict[str, Any]) -> HostedJob:
        """Upload (once) and create the job (once), journalling each step before it is taken. ``path`` is
        the file as :func:`hosted` just hashed it: a run is found again by that hash, so an edited file starts
        a new run rather than resuming this one."""
        if job.file_id is None:
            uploaded = self.api.upload(path)
            job = self._save(job, file_id=uploaded["id"])
            self._tell(job)
        if job.job_id is None:
            self.api.wait_processed(job.file_id, poll=min(self.poll_interval, 5.0), sleep=self.sleep)
            found = self.api.find_run(job.run_id) if job.state == "creating" else None
            if found is None:
                job = self._save(job, state="creating")  # written before the request: a crash is recoverable
                found = self.api.create_job(job.run_id, {**params, "training_file": job.file_id})
            job = self._save(job, job_id=found["id"], state=found["status"])
            self._tell(job)
        return job

    def refresh(self, job: HostedJob) -> HostedJob:
        """One look at the remote job: new events reported, the journal updated, a finished job settled."""
        assert job.job_id is not None
        remote = self.api.job(job.job_id)
        if remote["status"] != job.state and remote["status"] not in TERMINAL:
            job = self._save(job, state=remote["status"])
            self._tell(job)
        for event in self.api.events(job.job_id):
            if event["id"] not in self.seen:
                self.seen.add(event["id"])
                self._tell(job, HostedEvent(**{k: event[k] for k in HostedEvent.model_fields if k in event}))
        if remote["status"] in TERMINAL:
            job = self._finish(job, remote)
        return job

    def follow(self, job: HostedJob) -> HostedJob:
        while True:
            job = self.refresh(job)
            if job.terminal:
                return job
            self.sleep(self.poll_interval)

    def _finish(self, job: HostedJob, remote: dict[str, Any]) -> HostedJob:
        values: dict[str, Any] = {"state": remote["status"], "fine_tuned_model": remote.get("fine_tuned_model")}
        error = remote.get("error") or {}
        if error.get("message"):
            values["error"] = f"{error['message']} ({error.get('code') or 'no code'})"
        trained = remote.get("trained_tokens")
        if trained is not None:
            values["trained_tokens"] = trained
            values["cost_usd"] = ModelTable.cached(self.settings.models_file).lookup(job.model).training_cost(trained)
        if remote["status"] == "succeeded":
            values["checkpoints"] = [c.get("fine_tuned_model_checkpoint") for c in self.api.checkpoints(job.job_id)]
        job = self._save(job, **values)
        if trained and not self.journal.billed(job.run_id):
            self._bill(job)
            job = self._save(job, billed=1)
        self._tell(job)
        return job

    def _bill(self, job: HostedJob) -> None:
        if not self.settings.ledger:
            return
        from ..ledger import Ledger, LedgerEntry

        with Ledger.in_dir(self.settings.data_dir) as ledger:
            ledger.record(LedgerEntry(backend="openai", model=job.model, task="tune",
                                      prompt_tokens=job.trained_tokens or 0, cost_usd=job.cost_usd,
                                      request_id=job.job_id, job=job.suffix or f"tune-{job.run_id[:8]}"))


def _api(settings: Settings, api: FineTuningAPI | None) -> FineTuningAPI:
    return api or FineTuningAPI.from_settings(settings)


def status(ref: str, *, follow: bool = False, settings: Settings | None = None, api: FineTuningAPI | None = None,
           progress: Progress | None = None, poll_interval: float = 10.0,
           sleep: Callable[[float], None] = time.sleep) -> HostedJob:
    """A run from the journal (by run id, job id, ``ft:`` model or output folder), refreshed from the service;
    ``follow=True`` waits until it ends (and continues a run interrupted before its job was created)."""
    settings = settings or load_settings()
    with Journal(settings.data_dir) as journal:
        job = journal.find(ref)
        if job.provider != "openai" or job.terminal:
            return job
        follower = Follower(_api(settings, api), journal, settings, progress=progress,
                            poll_interval=poll_interval, sleep=sleep)
        if job.job_id is None:
            found = follower.api.find_run(job.run_id)
            if found is None:
                return job  # never created: running the original command again continues it
            job = follower._save(job, job_id=found["id"], state=found["status"])
        return follower.follow(job) if follow else follower.refresh(job)


def cancel(ref: str, *, settings: Settings | None = None, api: FineTuningAPI | None = None) -> HostedJob:
    """Cancel a hosted run's job; a run whose job was never created is marked cancelled locally."""
    settings = settings or load_settings()
    with Journal(settings.data_dir) as journal:
        job = journal.find(ref)
        if job.provider != "openai":
            raise InputError(f"{ref} is a local run; stop it with Ctrl-C (it resumes from its last checkpoint)")
        if job.terminal:
            return job
        api = _api(settings, api)
        job_id = job.job_id or (found["id"] if (found := api.find_run(job.run_id)) else None)
        if job_id is None:
            return journal.update(job.run_id, state="cancelled", error="cancelled before its job was created")
        remote = api.cancel(job_id)
        follower = Follower(api, journal, settings)
        job = journal.update(job.run_id, job_id=job_id, state=remote["status"]) \
            if remote["status"] not in TERMINAL else journal.update(job.run_id, job_id=job_id)
        return follower._finish(job, remote) if remote["status"] in TERMINAL else job


def list_runs(*, settings: Settings | None = None, limit: int = 50) -> list[HostedJob]:
    """The journal's runs, newest first (hosted jobs and local results)."""
    settings = settings or load_settings()
    with Journal(settings.data_dir) as journal:
        return journal.all(limit)
