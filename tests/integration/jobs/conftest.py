"""Fixtures for the signal-job tests: load tiny source tables, run a job under the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import factories
import pytest

from jobs import config as config_mod
from jobs import runner
from jobs.context import JobResult, Scope
from jobs.storage import bulk, schema


@pytest.fixture
def load_source(db) -> Callable[..., None]:
    """``load_source(users=[(1,), (2,)], quiz_answers=[(1, 10, 4.0)], ...)`` writes the rows.

    Rows are tuples of a table's leading columns or dicts; see ``factories``.
    """

    def load(**tables: list[Any]) -> None:
        frames = factories.source_frames(**tables)
        order = list(factories.TUPLE_COLUMNS)
        with db.engine.begin() as conn:
            for name in sorted(frames, key=order.index):
                bulk.insert_frame(conn, schema.metadata.tables[name], frames[name])

    return load


@pytest.fixture
def run_signal_job(db, default_config) -> Callable[..., tuple[int, JobResult]]:
    """``run_signal_job("quiz", Scope.all(), now=..., config=...)`` through ``runner.execute``."""

    def run(
        job: str,
        scope: Scope | None = None,
        *,
        now: dt.datetime = factories.T0,
        config: config_mod.Config | None = None,
    ) -> tuple[int, JobResult]:
        return runner.execute(
            job,
            runner.job_function(job),
            engine=db.engine,
            database_url=db.url,
            config=config or default_config,
            scope=scope or Scope.all(),
            trigger="nightly" if scope is None or scope.is_all else "event",
            clock=lambda: now,
        )

    return run
