"""SQL for the ``job_runs`` ledger. Only ``jobs.runner`` calls these, except :func:`fence`,
which every publishing transaction calls, and :func:`last_whole_success`, which the warm
event worker reads to know when what it holds went out of date."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
import sqlalchemy as sa

from jobs.errors import LeaseLostError, RunConflictError
from jobs.storage import bulk
from jobs.storage.engine import translate_errors, writer
from jobs.storage.schema import job_runs


def start_run(
    engine: sa.Engine,
    *,
    job_name: str,
    scope: str,
    trigger: str,
    algorithm_version: str,
    config_hash: str,
    now: dt.datetime,
    lease_s: float,
) -> tuple[int, int]:
    """Insert a ``running`` row for (job, scope); return ``(run_id, attempt)``.

    A running row whose heartbeat is older than ``lease_s`` is marked ``abandoned`` first, and
    the new run counts the next attempt. A live running row raises ``RunConflictError``; the
    unique partial index on (job_name, scope) WHERE status='running' settles a race between two
    processes that both found none.
    """
    stale_before = now - dt.timedelta(seconds=lease_s)
    try:
        with writer(engine).begin() as conn, translate_errors(f"start of {job_name} run"):
            running = conn.execute(
                sa.select(job_runs.c.id, job_runs.c.heartbeat_at, job_runs.c.attempt).where(
                    job_runs.c.job_name == job_name,
                    job_runs.c.scope == scope,
                    job_runs.c.status == "running",
                )
            ).first()
            if running is not None:
                if running.heartbeat_at >= stale_before:
                    raise RunConflictError(
                        f"job {job_name!r} scope {scope!r} is already running as run "
                        f"{running.id} (last heartbeat {running.heartbeat_at:%Y-%m-%d %H:%M:%S}Z)"
                    )
                if not _abandon(conn, running.id, running.heartbeat_at, now, lease_s):
                    raise RunConflictError(
                        f"job {job_name!r} scope {scope!r} is running as run {running.id}: "
                        "it beat again while being abandoned"
                    )
            previous = conn.execute(
                sa.select(job_runs.c.status, job_runs.c.attempt)
                .where(job_runs.c.job_name == job_name, job_runs.c.scope == scope)
                .order_by(job_runs.c.id.desc())
                .limit(1)
            ).first()
            attempt = 1
            if previous is not None and previous.status in ("failed", "abandoned"):
                attempt = previous.attempt + 1
            run_id = conn.execute(
                sa.insert(job_runs)
                .values(
                    job_name=job_name,
                    status="running",
                    trigger=trigger,
                    scope=scope,
                    started_at=now,
                    algorithm_version=algorithm_version,
                    config_hash=config_hash,
                    attempt=attempt,
                    metadata="{}",
                    heartbeat_at=now,
                )
                .returning(job_runs.c.id)
            ).scalar_one()
    except RunConflictError:
        raise
    except Exception as exc:
        if _is_unique_violation(exc):
            raise RunConflictError(
                f"job {job_name!r} scope {scope!r} was started by another process just now"
            ) from exc
        raise
    return int(run_id), attempt


def _abandon(
    conn: sa.Connection, run_id: int, heartbeat_at: dt.datetime, now: dt.datetime, lease_s: float
) -> bool:
    """Abandon ``run_id`` if it is still running with the stale heartbeat we saw; done?

    The heartbeat is part of the condition because the UPDATE may wait: a run that holds
    its row in a publishing transaction (``fence``) cannot beat until it commits, and the
    beat queued behind that lock lands first. A run that beat meanwhile is alive.
    """
    result = conn.execute(
        sa.update(job_runs)
        .where(
            job_runs.c.id == run_id,
            job_runs.c.status == "running",
            job_runs.c.heartbeat_at == heartbeat_at,
        )
        .values(
            status="abandoned",
            finished_at=now,
            error=f"abandoned: no heartbeat since {heartbeat_at:%H:%M:%S}Z (lease {lease_s:g} s)",
        )
    )
    return bool(result.rowcount)


def abandon_stale(engine: sa.Engine, *, now: dt.datetime, lease_s: float) -> list[int]:
    """Mark every running row whose heartbeat is older than ``lease_s`` ``abandoned``.

    ``start_run`` does this for its own (job, scope) only; a killed worker's runs may never
    see that scope again (the retried batch can hold other users), so the worker sweeps.
    Returns the ids abandoned.
    """
    stale_before = now - dt.timedelta(seconds=lease_s)
    with writer(engine).begin() as conn, translate_errors("abandon stale runs"):
        stale = conn.execute(
            sa.select(job_runs.c.id, job_runs.c.heartbeat_at).where(
                job_runs.c.status == "running", job_runs.c.heartbeat_at < stale_before
            )
        ).all()
        abandoned = [
            int(run_id)
            for run_id, heartbeat_at in stale
            if _abandon(conn, run_id, heartbeat_at, now, lease_s)
        ]
    return abandoned


def _is_unique_violation(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, sa.exc.IntegrityError):
            return True
        cause = cause.__cause__
    return False


def heartbeat(engine: sa.Engine, run_id: int, now: dt.datetime) -> None:
    with writer(engine).begin() as conn, translate_errors("job_runs heartbeat"):
        conn.execute(
            sa.update(job_runs)
            .where(job_runs.c.id == run_id, job_runs.c.status == "running")
            .values(heartbeat_at=now)
        )


def fence(conn: sa.Connection, run_id: int, *, share: bool = False) -> None:
    """Raise ``LeaseLostError`` unless run ``run_id`` is still ``running``; hold its row.

    Call it inside a transaction that publishes what the run computed, before its commit.
    The row stays locked until that commit (PostgreSQL: FOR UPDATE, or FOR SHARE with
    ``share`` so that several writers of one run do not queue on each other; SQLite: the
    transaction's write lock), so a sweep or a new run that abandons this one waits for the
    commit, and a run that was paused past its lease and abandoned meanwhile writes
    nothing: the fence of issue 9.
    """
    query = sa.select(job_runs.c.status).where(job_runs.c.id == run_id)
    query = query.with_for_update(read=share)
    with translate_errors(f"fence of run {run_id}"):
        status = conn.execute(query).scalar_one_or_none()
    if status != "running":
        raise LeaseLostError(
            f"run {run_id} is {status or 'missing'}, not running: it lost its lease "
            "(no heartbeat for longer than runner.lease_s) and another run may have taken "
            "over; nothing of it was written"
        )


def finish_run(
    engine: sa.Engine,
    run_id: int,
    *,
    status: str,
    now: dt.datetime,
    duration_ms: int,
    error: str | None,
    metadata: dict[str, Any],
) -> bool:
    """Record the run's outcome; False if it is no longer ``running`` (abandoned meanwhile:
    that verdict stands, and a new run may own the slot)."""
    with writer(engine).begin() as conn, translate_errors("job_runs finish"):
        result = conn.execute(
            sa.update(job_runs)
            .where(job_runs.c.id == run_id, job_runs.c.status == "running")
            .values(
                status=status,
                finished_at=now,
                duration_ms=duration_ms,
                error=error,
                metadata=json.dumps(metadata, sort_keys=True, default=str),
                heartbeat_at=now,
            )
        )
    return bool(result.rowcount)


def recent_runs(engine: sa.Engine, limit: int = 20, job_name: str | None = None) -> pd.DataFrame:
    query = sa.select(*job_runs.c).order_by(job_runs.c.id.desc()).limit(limit)
    if job_name is not None:
        query = query.where(job_runs.c.job_name == job_name)
    with engine.connect() as conn:
        return bulk.read_frame(conn, query, what="read job_runs")


def last_whole_success(conn: sa.Connection, job_names: tuple[str, ...]) -> dt.datetime | None:
    """When the latest successful whole-scope (``all``) run of one of ``job_names`` ended."""
    query = sa.select(sa.func.max(job_runs.c.finished_at)).where(
        job_runs.c.job_name.in_(job_names),
        job_runs.c.scope == "all",
        job_runs.c.status.in_(("succeeded", "succeeded_with_warnings")),
    )
    with translate_errors("read the last whole-scope run"):
        value = conn.execute(query).scalar_one_or_none()
    if isinstance(value, str):  # SQLite without type affinity on an aggregate
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value
