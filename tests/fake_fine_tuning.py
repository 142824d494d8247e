"""Fine-tuning jobs for the test server (:mod:`tests.openai_server`).

A job moves by the clock, as a real one does: ``validating_files`` → ``queued`` → ``running`` →
``succeeded`` (or ``failed``, or ``cancelled`` when asked), over ``durations`` seconds per stage. It bills
``trained_tokens`` the way OpenAI does for chat fine-tuning (each example counted as a chat request, times
the epochs), reports events newest first, lists one checkpoint per epoch and names a ``fine_tuned_model``.
``allowed=False`` answers job creation with the 403 OpenAI sends organisations it no longer lets fine-tune.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["FineTuning", "FORBIDDEN_MESSAGE"]

FORBIDDEN_MESSAGE = "Fine-tuning is not available for your organization."


@dataclass
class _Job:
    obj: dict[str, Any]
    started: float  # monotonic
    examples: list[list[dict]]
    epochs: int
    cancelled_at: float | None = None
    events: list[dict] = field(default_factory=list)


def _default_epochs(n: int) -> int:
    if n * 3 < 100:
        return min(25, math.ceil(100 / n))
    if n * 3 > 25_000:
        return max(1, 25_000 // n)
    return 3


class FineTuning:
    """The state behind ``/v1/fine_tuning/jobs``; ``error`` builds an API error."""

    def __init__(self, *, files, count_tokens, error) -> None:
        self._files = files  # file id -> (info, bytes), read with the server's lock held
        self._count = count_tokens  # (model, messages) -> prompt tokens by OpenAI's chat formula
        self._error = error
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.jobs: dict[str, _Job] = {}
        self.durations = (0.5, 0.5, 1.0)  # validating_files, queued, running (seconds)
        self.allowed = True
        self.failure: dict[str, Any] | None = None  # {"code", "message", "param", "at": "validating"|"running"}
        self.lost_create_answers = 0  # creations whose answer is then lost (the connection is cut)
        self.created_bodies: list[dict] = []

    # -- helpers

    def _job(self, job_id: str) -> _Job:
        if job_id not in self.jobs:
            raise self._error(404, f"No fine-tuning job found with id {job_id}", param="fine_tuning_job_id")
        return self.jobs[job_id]

    def _read_examples(self, file_id: str) -> list[list[dict]]:
        info, data = self._files(file_id)
        if info["purpose"] != "fine-tune":
            raise self._error(400, f"File {file_id} does not have purpose fine-tune", param="training_file")
        examples = []
        for line in data.splitlines():
            if line.strip():
                try:
                    examples.append(json.loads(line)["messages"])
                except (ValueError, KeyError, TypeError):
                    raise self._error(400, f"Invalid file format: {file_id}", param="training_file") from None
        return examples

    def _event(self, job: _Job, at: float, message: str, kind: str = "message", level: str = "info",
               data: dict | None = None) -> None:
        job.events.append({"id": f"ftevent-{job.obj['id'][6:]}-{len(job.events) + 1}", "object":
                           "fine_tuning.job.event", "created_at": int(at), "level": level, "message": message,
                           "type": kind, "data": data or {}})

    def _advance(self, job: _Job) -> None:
        """Bring the job up to the clock: its status, its events, and when it ends its result."""
        obj = job.obj
        if obj["status"] in ("succeeded", "failed", "cancelled"):
            return
        validating, queued, running = self.durations
        now = time.monotonic()
        elapsed = (job.cancelled_at or now) - job.started
        wall = time.time() - (now - job.started)  # the wall time the job started
        failure = self.failure or {}
        done = len(job.events)

        order = ("validating_files", "queued", "running")

        def reach(status: str, at: float, *messages: str) -> None:
            if order.index(obj["status"]) < order.index(status):
                obj["status"] = status
                for m in messages:
                    self._event(job, wall + at, m)

        if elapsed >= validating:
            if failure.get("at") == "validating":
                self._fail(job, wall + validating, failure)
                return
            reach("queued", validating, "Files validated, moving job to queued state")
        if elapsed >= validating + queued:
            reach("running", validating + queued, "Fine-tuning job started")
            steps = 3 * job.epochs
            for step in range(1, steps + 1):
                at = validating + queued + running * step / (steps + 1)
                if elapsed >= at and not any(e.get("data", {}).get("step") == step for e in job.events):
                    self._event(job, wall + at, f"Step {step}/{steps}: training loss={2.0 / step:.3f}",
                                kind="metrics", data={"step": step, "train_loss": 2.0 / step})
        if job.cancelled_at is not None:
            obj.update(status="cancelled", finished_at=int(wall + elapsed))
            trained = self._tokens(job) * max(0.0, min(1.0, (elapsed - validating - queued) / running))
            obj["trained_tokens"] = int(trained)
            self._event(job, wall + elapsed, "Fine-tuning job cancelled")
            return
        if elapsed >= validating + queued + running:
            end = wall + validating + queued + running
            if failure.get("at") == "running":
                self._fail(job, end, failure)
                return
            suffix = obj.get("user_provided_suffix") or ""
            model = f"ft:{obj['model']}:aigc-tests:{suffix}:{obj['id'][6:]}"
            obj.update(status="succeeded", finished_at=int(end), fine_tuned_model=model,
                       trained_tokens=self._tokens(job), result_files=[])
            self._event(job, end, f"New fine-tuned model created: {model}")
            self._event(job, end, "The job has successfully completed")
        if len(job.events) != done:
            job.events.sort(key=lambda e: (e["created_at"], int(e["id"].rsplit("-", 1)[1])))

    def _tokens(self, job: _Job) -> int:
        return sum(self._count(job.obj["model"], messages) for messages in job.examples) * job.epochs

    def _fail(self, job: _Job, at: float, failure: dict[str, Any]) -> None:
        error = {"code": failure.get("code", "invalid_training_file"), "message": failure["message"],
                 "param": failure.get("param")}
        job.obj.update(status="failed", finished_at=int(at), error=error)
        self._event(job, at, failure["message"], level="error")

    # -- endpoints (called by the server with its request; each returns a JSON body)

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("model") or not body.get("training_file"):
            raise self._error(400, "Missing required parameter: 'model' and 'training_file'.")
        if not self.allowed:
            raise self._error(403, FORBIDDEN_MESSAGE, type="invalid_request_error")
        examples = self._read_examples(body["training_file"])
        method = body.get("method") or {"type": "supervised", "supervised": {}}
        hyper = dict((method.get("supervised") or {}).get("hyperparameters") or body.get("hyperparameters") or {})
        epochs = hyper.get("n_epochs", "auto")
        epochs = _default_epochs(len(examples)) if epochs in ("auto", None) else int(epochs)
        with self._lock:
            self.created_bodies.append(copy.deepcopy(body))
            job_id = f"ftjob-{next(self._ids):06d}"
            obj = {
                "id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()), "error": None,
                "fine_tuned_model": None, "finished_at": None, "model": body["model"],
                "organization_id": "org-aigc-tests", "result_files": [], "seed": body.get("seed") or 42,
                "status": "validating_files", "trained_tokens": None, "training_file": body["training_file"],
                "validation_file": body.get("validation_file"), "estimated_finish": None, "integrations": [],
                "metadata": body.get("metadata"), "user_provided_suffix": body.get("suffix"),
                "hyperparameters": {"n_epochs": epochs, "batch_size": hyper.get("batch_size", "auto"),
                                    "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto")},
                "method": {"type": method.get("type", "supervised"),
                           "supervised": {"hyperparameters": {**hyper, "n_epochs": epochs}}},
            }
            job = self.jobs[job_id] = _Job(obj, time.monotonic(), examples, epochs)
            self._event(job, time.time(), f"Created fine-tuning job: {job_id}")
            self._event(job, time.time(), f"Validating training file: {body['training_file']}")
            return copy.deepcopy(obj)

    def lose_this_answer(self) -> bool:
        """True (once per ``lost_create_answers``) when the job just created must not be answered."""
        with self._lock:
            if self.lost_create_answers > 0:
                self.lost_create_answers -= 1
                return True
            return False

    def retrieve(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            self._advance(job)
            return copy.deepcopy(job.obj)

    def list(self, query: str) -> dict[str, Any]:
        params = dict(parse_qsl(query))
        wanted = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[")}
        limit = int(params.get("limit", 20))
        with self._lock:
            jobs = []
            for job in reversed(list(self.jobs.values())):
                self._advance(job)
                meta = job.obj.get("metadata") or {}
                if all(meta.get(k) == v for k, v in wanted.items()):
                    jobs.append(copy.deepcopy(job.obj))
        return {"object": "list", "data": jobs[:limit], "has_more": len(jobs) > limit}

    def events(self, job_id: str, query: str) -> dict[str, Any]:
        limit = int(dict(parse_qsl(query)).get("limit", 20))
        with self._lock:
            job = self._job(job_id)
            self._advance(job)
            newest = list(reversed(job.events))
        return {"object": "list", "data": copy.deepcopy(newest[:limit]), "has_more": len(newest) > limit}

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            self._advance(job)
            obj = job.obj
            if obj["status"] != "succeeded":
                return {"object": "list", "data": [], "has_more": False}
            data = [{"id": f"ftckpt_{job_id[6:]}_{epoch}", "object": "fine_tuning.job.checkpoint",
                     "created_at": obj["finished_at"], "fine_tuning_job_id": job_id, "step_number": 3 * epoch,
                     "fine_tuned_model_checkpoint": f"{obj['fine_tuned_model']}:ckpt-step-{3 * epoch}",
                     "metrics": {"step": 3 * epoch, "train_loss": 2.0 / (3 * epoch)}}
                    for epoch in range(job.epochs, 0, -1)]
        return {"object": "list", "data": data, "has_more": False}

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            self._advance(job)
            if job.obj["status"] in ("succeeded", "failed", "cancelled"):
                raise self._error(400, f"Job {job_id} has already {job.obj['status']}; it cannot be cancelled.")
            job.cancelled_at = time.monotonic()
            self._advance(job)
            return copy.deepcopy(job.obj)
