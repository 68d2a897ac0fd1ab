"""Runs a job under the ``job_runs`` ledger: the only code that writes ``job_runs``.

``tracked`` claims the (job, scope) slot, keeps a heartbeat while its body runs, and records
status, duration, figures and error (with its cause chain) in a ``finally`` block;
``execute`` runs a job's ``run(ctx, scope)`` inside it, committing the job's session on
success and rolling it back on failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from jobs import progress
from jobs.config import Config
from jobs.context import Figures, JobContext, JobResult, Scope

# Re-exported: the error texts live with the error tree so the CLI formats them cheaply.
from jobs.errors import chain_parts as chain_parts
from jobs.errors import error_chain as error_chain
from jobs.errors import keep_causes as keep_causes
from jobs.errors import plain_text as plain_text
from jobs.storage import engine as engine_mod
from jobs.storage import ledger

logger = logging.getLogger(__name__)

# job name -> module whose ``run(ctx, scope)`` implements it
JOB_MODULES: dict[str, str] = {
    "quiz": "jobs.signals.quiz",
    "interests": "jobs.signals.interests",
    "ratings": "jobs.signals.ratings",
    "likes": "jobs.signals.likes",
    "match": "jobs.match",
    "feed": "jobs.feed",
    "nightly": "jobs.pipeline",
}
JOB_NAMES = tuple(JOB_MODULES)
# Names in job_runs: the jobs, plus the event worker's batches (``worker.process_batch``).
LEDGER_NAMES = (*JOB_NAMES, "worker")
TRIGGERS = ("nightly", "event", "on_demand", "backfill")

JobFn = Callable[[JobContext, Scope], JobResult]


def job_function(job_name: str) -> JobFn:
    """The ``run`` function of a job, imported on first use."""
    if job_name not in JOB_MODULES:
        raise ValueError(f"job_name must be one of {JOB_NAMES}; got {job_name!r}")
    module = importlib.import_module(JOB_MODULES[job_name])
    fn: JobFn = module.run
    return fn


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Heartbeat:
    """Refreshes the run's heartbeat from a daemon thread until stopped."""

    def __init__(
        self,
        engine: sa.Engine,
        run_id: int,
        interval_s: float,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._run_id = run_id
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                ledger.heartbeat(self._engine, self._run_id, self._clock())
            except Exception:
                # A missed beat must not kill the job; a long outage shows up as abandonment.
                logger.warning(
                    "heartbeat for run %d failed",
                    self._run_id,
                    exc_info=True,
                    extra={"action": "runner.heartbeat"},
                )


@dataclasses.dataclass
class Run:
    """A ``job_runs`` row being tracked: its id, attempt, start time and figures."""

    run_id: int
    attempt: int
    started_at: dt.datetime
    figures: Figures
    result: JobResult | None = None


@contextlib.contextmanager
def tracked(
    job_name: str,
    scope_label: str,
    *,
    engine: sa.Engine,
    config: Config,
    trigger: str,
    clock: Callable[[], dt.datetime] = utcnow,
) -> Iterator[Run]:
    """Hold a ``job_runs`` row for the body: claim the slot, heartbeat, record the outcome.

    Raises ``RunConflictError`` when the same job and scope is already running. The row ends
    ``succeeded`` when the body returns, ``succeeded_with_warnings`` when the body recorded
    warnings (``run.figures.warn`` or ``run.result.warnings``: they go to ``error`` as
    ``warning: …`` lines, to the metadata and to ``run.result``), else ``failed`` with the
    error and its causes (the exception propagates). Figures and ``Run.result`` go to the
    row's metadata.
    """
    if job_name not in LEDGER_NAMES:
        raise ValueError(f"job_name must be one of {LEDGER_NAMES}; got {job_name!r}")
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}; got {trigger!r}")
    now = clock()
    run_id, attempt = ledger.start_run(
        engine,
        job_name=job_name,
        scope=scope_label,
        trigger=trigger,
        algorithm_version=config.algorithm_version,
        config_hash=config.content_hash,
        now=now,
        lease_s=config.runner.lease_s,
    )
    job_logger = logging.getLogger(f"jobs.{job_name}")
    job_logger.info(
        "run %d: %s %s (attempt %d)",
        run_id,
        job_name,
        scope_label,
        attempt,
        extra={"action": f"{job_name}.start", "run_id": run_id},
    )
    run = Run(run_id=run_id, attempt=attempt, started_at=now, figures=Figures())
    started = time.perf_counter()
    status = "failed"
    error: str | None = None
    try:
        with _Heartbeat(engine, run_id, config.runner.heartbeat_interval_s, clock):
            yield run
        warnings = (*(run.result.warnings if run.result else ()), *run.figures.warnings)
        if run.result is not None:
            run.result = dataclasses.replace(run.result, warnings=warnings)
        status = "succeeded_with_warnings" if warnings else "succeeded"
        if warnings:
            error = "\n".join(f"warning: {w}" for w in warnings)
    except Exception as exc:
        error = error_chain(exc)
        raise
    finally:
        duration_ms = int((time.perf_counter() - started) * 1000)
        result = run.result
        metadata: dict[str, Any] = {
            "phases_s": run.figures.phases_s,
            "skipped": dict(result.skipped if result is not None else run.figures.skipped),
            **run.figures.counts,
        }
        recorded = result.warnings if result is not None else tuple(run.figures.warnings)
        if recorded:
            metadata["warnings"] = list(recorded)
        if result is not None:
            metadata.update(
                rows_read=result.rows_read,
                rows_written=result.rows_written,
                users=result.users,
                **result.extra,
            )
        recorded_outcome = ledger.finish_run(
            engine,
            run_id,
            status=status,
            now=clock(),
            duration_ms=duration_ms,
            error=error,
            metadata=metadata,
        )
        if not recorded_outcome:
            job_logger.warning(
                "run %d: was abandoned while it ran (lease lost); its outcome %s is not recorded",
                run_id,
                status,
                extra={"action": f"{job_name}.lease_lost", "run_id": run_id, "status": status},
            )
        job_logger.info(
            "run %d: %s in %.1f s",
            run_id,
            status,
            duration_ms / 1000,
            extra={"action": f"{job_name}.finish", "run_id": run_id, "status": status},
        )


def execute(
    job_name: str,
    job_fn: JobFn,
    *,
    engine: sa.Engine,
    database_url: str,
    config: Config,
    scope: Scope,
    trigger: str = "on_demand",
    clock: Callable[[], dt.datetime] = utcnow,
    show_progress: bool = False,
    force_swap: bool = False,
    replace_version: bool = False,
    as_of: dt.datetime | None = None,
) -> tuple[int, JobResult]:
    """Run ``job_fn(ctx, scope)`` under the ledger; return ``(run_id, result)``.

    ``as_of`` pins the job's ``ctx.now`` (what ages, newness and row stamps are computed
    at; default: the run's start by ``clock``), so two runs on the same data write the same
    rows. The ledger itself (start, heartbeat, finish) keeps following ``clock``: a pinned
    time in the past must not make a live run look abandoned.

    Raises ``RunConflictError`` when the same job and scope is already running. Any failure
    of the job is recorded (status ``failed``, the error and its causes) and re-raised. A job
    that recorded warnings (``ctx.figures.warn``) ends ``succeeded_with_warnings``, with the
    warnings in ``error`` and the metadata, and in the returned result's ``warnings``.
    """
    if job_name not in JOB_NAMES:
        raise ValueError(f"job_name must be one of {JOB_NAMES}; got {job_name!r}")
    if as_of is not None and as_of.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware (UTC); got {as_of!r}")
    with (
        tracked(
            job_name, scope.label, engine=engine, config=config, trigger=trigger, clock=clock
        ) as run,
        Session(engine_mod.writer(engine)) as session,
        progress.status(job_name, enabled=show_progress) as status,
    ):
        run.figures.on_phase = status
        ctx = JobContext(
            config=config,
            session=session,
            now=run.started_at if as_of is None else as_of,
            as_of=as_of,
            logger=logging.getLogger(f"jobs.{job_name}"),
            database_url=database_url,
            run_id=run.run_id,
            trigger=trigger,
            figures=run.figures,
            show_progress=show_progress,
            force_swap=force_swap,
            replace_version=replace_version,
        )
        try:
            run.result = job_fn(ctx, scope)
            # Fenced: a run abandoned meanwhile (paused past its lease) commits nothing.
            ledger.fence(session.connection(), run.run_id)
            session.commit()
        except BaseException:
            session.rollback()
            raise
    # After the ledger has settled: it adds the recorded warnings to the result.
    assert run.result is not None
    return run.run_id, run.result


def abandon_stale(engine: sa.Engine, config: Config, now: dt.datetime) -> list[int]:
    """Mark running rows silent for longer than ``runner.lease_s`` abandoned; their ids."""
    abandoned = ledger.abandon_stale(engine, now=now, lease_s=config.runner.lease_s)
    if abandoned:
        logger.warning(
            "abandoned %d runs without a heartbeat for %g s: %s",
            len(abandoned),
            config.runner.lease_s,
            abandoned,
            extra={"action": "runner.abandon", "run_ids": abandoned},
        )
    return abandoned
