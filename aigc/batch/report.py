"""What a run tells its operator: the exit code, a progress snapshot, and a JSON report per run.

Exit codes of ``aigc batch run`` (also written into each report):

    0   every item is done
    1   some items failed (each is listed in the report with its reason), or are still not done for a
        reason the report gives (a file changed during the run, items waiting in an open batch)
    2   bad job file or configuration (nothing was sent), or the server refused the credentials/model
    3   budget reached: nothing more was sent, the remaining items are left pending
    75  another run of the same job holds the lock (EX_TEMPFAIL: try again later)
    130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM, e.g. cron's timeout): nothing more was
        sent, requests in flight were given a moment to finish, the rest is left pending

When several apply, the first of 130/143, 2, 3, 1 wins.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .outputs import write_file

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_CONFIG", "EXIT_BUDGET", "EXIT_LOCKED", "Failure", "Progress",
           "RunReport"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUDGET, EXIT_LOCKED = 0, 1, 2, 3, 75
# A run stopped by a signal exits as a shell reports a process killed by it: 128 + the signal's number.
EXIT_SIGNAL_BASE = 128


@dataclass(frozen=True)
class Failure:
    """An item that is not done, and why."""

    id: str
    reason: str
    error: str  # the error type, e.g. InputError, BadRequest, ServerError
    permanent: bool  # False: a plain rerun tries again; True: only --retry-failed does
    this_run: bool


@dataclass
class Progress:
    """Where a run stands; handed to the progress callback after each item."""

    total: int
    done: int
    failed: int
    pending: int
    todo: int  # items this run set out to do
    finished: int  # of those, how many are settled (done or failed)
    cost_usd: float | None
    tokens: int
    elapsed_s: float
    note: str = ""
    pace_rpm: float | None = None  # requests and tokens per minute over the last few seconds
    pace_tpm: float | None = None
    limited_by: str | None = None  # requests, tokens, 429s or latency/concurrency
    eta_s: float | None = None  # seconds left at the current rate of settling items


@dataclass
class RunReport:
    """One run of one job, as written to ``<state dir>/reports/<run id>.json``."""

    job: str
    job_file: str
    run_id: str
    mode: str  # direct, batch-api or dry-run
    started: str
    finished: str = ""
    duration_s: float = 0.0
    exit_code: int = EXIT_OK
    outcome: str = "done"  # done, failed, budget, config, interrupted
    stopped: str | None = None  # why the run stopped early, if it did
    total: int = 0  # items of the job as its inputs stand
    done: int = 0
    failed: int = 0
    pending: int = 0
    done_this_run: int = 0
    failed_this_run: int = 0
    cached: int = 0  # done this run from the response cache, at no cost
    skipped_done: int = 0  # already done by earlier runs
    redone_after_crash: int = 0  # left in flight by a run that died, redone now
    adopted: int = 0  # not marked done, but their outputs were there, written for their keys: no request
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None: some requests had no known price
    budget: dict[str, Any] = field(default_factory=dict)
    rate: dict[str, Any] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report_path: str | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens"] = self.tokens
        return data

    def write(self, folder: Path, *, owner: str = "w") -> Path:
        """Write the report atomically; return its path."""
        path = folder / f"{self.run_id}.json"
        self.report_path = str(path)
        write_file(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", owner=owner)
        return path


def exit_code_for(*, config_error: bool, budget: bool, failed: int, signal: int | None = None) -> tuple[int, str]:
    if signal is not None:
        return EXIT_SIGNAL_BASE + signal, "interrupted"
    if config_error:
        return EXIT_CONFIG, "config"
    if budget:
        return EXIT_BUDGET, "budget"
    if failed:
        return EXIT_FAILED, "failed"
    return EXIT_OK, "done"
