"""Batch content jobs for cron: a TOML job file, run exactly once, within limits and budget.

    from aigc.batch import load_job, Runner
    report = asyncio.run(Runner(load_job("nightly.toml")).run())
    report.exit_code, report.failures

The parts: :mod:`~aigc.batch.job` (the job file), :mod:`~aigc.batch.inputs` (items and their keys),
:mod:`~aigc.batch.journal` (item states in SQLite), :mod:`~aigc.batch.outputs` (atomic writes),
:mod:`~aigc.batch.limiter` (the shared rpm/tpm gate), :mod:`~aigc.batch.runner` (a run),
:mod:`~aigc.batch.batchapi` (the OpenAI Batch API path), :mod:`~aigc.batch.report` and
:mod:`~aigc.batch.status`. See docs/batch.md for the job file and the exit codes.
"""

from __future__ import annotations

from ..ratelimit import RateGate
from .job import Job, load_job
from .report import EXIT_BUDGET, EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED, EXIT_OK, Failure, Progress, RunReport
from .runner import JobLocked, Runner
from .status import JobStatus, Plan, job_status, plan_job

__all__ = [
    "Job", "load_job", "Runner", "JobLocked", "RunReport", "Failure", "Progress", "RateGate",
    "JobStatus", "Plan", "job_status", "plan_job",
    "EXIT_OK", "EXIT_FAILED", "EXIT_CONFIG", "EXIT_BUDGET", "EXIT_LOCKED",
]
