"""``<data_dir>/tune.db``: the journal of fine-tuning runs and the model aliases, one SQLite file.

A run is written to the journal before anything is sent for it, and updated as it moves (file uploaded,
job created, each status), so a command killed at any point can be run again and take over where it
stopped. Aliases are rows too, so naming a model is atomic and visible to every process at once.
"""

from __future__ import annotations

from pathlib import Path

from ..db import Database, Migrations
from . import store_path

__all__ = ["open_store", "store_path", "MIGRATIONS"]

MIGRATIONS = Migrations()
MIGRATIONS.register(
    "m001_initial",
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        provider TEXT NOT NULL,
        where_ TEXT,
        model TEXT NOT NULL,
        suffix TEXT,
        data_path TEXT NOT NULL,
        data_sha256 TEXT NOT NULL,
        epochs INTEGER,
        estimated_tokens INTEGER,
        estimated_cost_usd REAL,
        state TEXT NOT NULL,
        file_id TEXT,
        job_id TEXT UNIQUE,
        fine_tuned_model TEXT,
        trained_tokens INTEGER,
        cost_usd REAL,
        billed INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        checkpoints TEXT,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        finished TEXT
    );
    CREATE INDEX runs_key ON runs (key);
    CREATE TABLE aliases (
        name TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        backend TEXT NOT NULL,
        base_model TEXT,
        input_price REAL,
        output_price REAL,
        retires TEXT,
        created TEXT NOT NULL
    );
    """,
)


def open_store(data_dir: Path | str) -> Database:
    return Database(store_path(data_dir), MIGRATIONS)
