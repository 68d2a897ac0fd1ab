"""The job-run ledger: one running run per (job, scope), abandonment, attempts, figures."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import time

import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner
from jobs.context import JobContext, JobResult, Scope
from jobs.errors import RunConflictError, StorageError
from jobs.storage import engine as engine_mod
from jobs.storage import ledger
from jobs.storage.schema import job_runs


def _runs(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(job_runs).order_by(job_runs.c.id)))


def _slow_job(ctx: JobContext, scope: Scope) -> JobResult:
    time.sleep(1.5)
    return JobResult(users=1)


def _race_worker(
    url: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue
) -> None:
    engine = engine_mod.create_engine(url)
    cfg = config_mod.load_config()
    barrier.wait()
    try:
        runner.execute(
            "quiz", _slow_job, engine=engine, database_url=url, config=cfg, scope=Scope.users(7)
        )
        out.put("ran")
    except RunConflictError as exc:
        out.put(f"refused: {exc}")


def test_two_processes_racing_exactly_one_runs(db) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(db.url, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    outcomes = sorted(out.get(timeout=5) for _ in procs)
    assert outcomes[0] == "ran"
    assert outcomes[1].startswith("refused: job 'quiz' scope 'user:7'")
    rows = _runs(db.engine)
    assert [(r.status, r.scope) for r in rows] == [("succeeded", "user:7")]


def test_stale_run_is_abandoned_and_retry_counts_attempt(db, default_config) -> None:
    t0 = dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)
    run_id, attempt = ledger.start_run(
        db.engine,
        job_name="match",
        scope="all",
        trigger="nightly",
        algorithm_version="v1",
        config_hash="h",
        now=t0,
        lease_s=120,
    )
    assert attempt == 1
    # Within the lease the slot is taken.
    with pytest.raises(RunConflictError, match="already running as run"):
        runner.execute(
            "match",
            lambda c, s: JobResult(),
            engine=db.engine,
            database_url=db.url,
            config=default_config,
            scope=Scope.all(),
            clock=lambda: t0 + dt.timedelta(seconds=60),
        )
    # Past the lease the dead run is marked abandoned and the new one is attempt 2.
    later = t0 + dt.timedelta(seconds=121)
    new_id, result = runner.execute(
        "match",
        lambda c, s: JobResult(users=3),
        engine=db.engine,
        database_url=db.url,
        config=default_config,
        scope=Scope.all(),
        clock=lambda: later,
    )
    rows = {r.id: r for r in _runs(db.engine)}
    assert rows[run_id].status == "abandoned"
    assert "no heartbeat" in rows[run_id].error
    assert rows[new_id].status == "succeeded"
    assert rows[new_id].attempt == 2
    assert result.users == 3


def test_failed_run_records_error_chain_and_rolls_back(db, default_config) -> None:
    from jobs.storage.schema import users

    def failing(ctx: JobContext, scope: Scope) -> JobResult:
        ctx.session.execute(sa.insert(users).values(id=1, seeking_mask=2, created_at=ctx.now))
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise StorageError("write of x failed") from exc

    with pytest.raises(StorageError):
        runner.execute(
            "quiz",
            failing,
            engine=db.engine,
            database_url=db.url,
            config=default_config,
            scope=Scope.all(),
        )
    (row,) = _runs(db.engine)
    assert row.status == "failed"
    assert "StorageError: write of x failed" in row.error
    assert "caused by KeyError" in row.error
    assert row.duration_ms is not None and row.finished_at is not None
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one() == 0
    # the next run of that scope counts its attempt
    _, _ = runner.execute(
        "quiz",
        lambda c, s: JobResult(),
        engine=db.engine,
        database_url=db.url,
        config=default_config,
        scope=Scope.all(),
    )
    assert _runs(db.engine)[-1].attempt == 2


def test_success_records_figures_version_and_hash(db, default_config) -> None:
    def job(ctx: JobContext, scope: Scope) -> JobResult:
        with ctx.figures.phase("load"):
            pass
        ctx.figures.skip({"nan_vector": 2, "no_location": 0}, ctx.logger, "test.skip")
        return JobResult(
            rows_read=10,
            rows_written=4,
            users=5,
            skipped=dict(ctx.figures.skipped),
            extra={"funnel": {"kept": 4}},
        )

    _, _ = runner.execute(
        "interests",
        job,
        engine=db.engine,
        database_url=db.url,
        config=default_config,
        scope=Scope.users(3),
        trigger="event",
    )
    (row,) = _runs(db.engine)
    meta = json.loads(row.metadata)
    assert meta["rows_read"] == 10 and meta["rows_written"] == 4 and meta["users"] == 5
    assert meta["skipped"] == {"nan_vector": 2}
    assert "load" in meta["phases_s"]
    assert meta["funnel"] == {"kept": 4}
    assert (row.trigger, row.scope) == ("event", "user:3")
    assert row.algorithm_version == default_config.algorithm_version
    assert row.config_hash == default_config.content_hash


def test_unique_index_refuses_a_second_running_row(db) -> None:
    now = dt.datetime.now(dt.UTC)
    values = dict(
        job_name="quiz",
        status="running",
        trigger="nightly",
        scope="all",
        started_at=now,
        algorithm_version="v1",
        config_hash="h",
        heartbeat_at=now,
    )
    with db.engine.begin() as conn:
        conn.execute(sa.insert(job_runs).values(**values))
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.insert(job_runs).values(**values))


def test_heartbeat_uses_the_runs_clock(db) -> None:
    """Regression: beats were stamped with the wall clock while the run used an injected one,
    so a run killed under a fixed clock looked alive forever."""
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    data = config_mod.load_config().model_dump()
    data["runner"] = {"heartbeat_interval_s": 0.05, "lease_s": 60}
    cfg = config_mod.from_mapping(data)
    seen: list[dt.datetime] = []

    def slow(ctx: JobContext, scope: Scope) -> JobResult:
        time.sleep(0.4)  # several beats
        (row,) = _runs(db.engine)
        seen.append(row.heartbeat_at)
        return JobResult()

    runner.execute(
        "quiz",
        slow,
        engine=db.engine,
        database_url=db.url,
        config=cfg,
        scope=Scope.all(),
        clock=lambda: t0 + dt.timedelta(seconds=1),
    )
    assert seen == [t0 + dt.timedelta(seconds=1)]
