"""The event worker: a killed worker's events are done by the next one, not dead; a poison
event is isolated from its batch; a job slot that is taken defers events without cost."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner, worker
from jobs.context import Scope
from jobs.storage import events as event_store
from jobs.storage import ledger
from jobs.storage.schema import events, job_runs
from jobs.tools import seed as seed_mod

HOLD_WORKER = Path(__file__).with_name("hold_worker.py")
# Short lease and backoff so recovery takes seconds; no Ray on the event path anyway.
FAST_YAML = """\
ray: {enabled: false}
runner: {heartbeat_interval_s: 0.2, lease_s: 1.5}
worker: {poll_interval_s: 0.1, backoff_base_s: 0.1, backoff_max_s: 0.5, max_attempts: 3}
"""
WAIT_S = 120  # an upper bound against hanging, never an assertion about speed


@pytest.fixture
def fast_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fast-worker.yaml"
    path.write_text(FAST_YAML)
    return path


@pytest.fixture
def fast_config(fast_config_file: Path) -> config_mod.Config:
    return config_mod.load_config([fast_config_file])


@pytest.fixture
def population(db):
    with db.engine.begin() as conn:
        seed_mod.write(conn, seed_mod.generate(40, seed=5, now=seed_mod.DEFAULT_NOW))
    return db


def event_rows(db) -> list[sa.Row]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.select(events).order_by(events.c.id)))


def run_rows(db, job_name: str | None = None) -> list[sa.Row]:
    query = sa.select(job_runs).order_by(job_runs.c.id)
    if job_name is not None:
        query = query.where(job_runs.c.job_name == job_name)
    with db.engine.connect() as conn:
        return list(conn.execute(query))


def wait_for(what: str, predicate, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def enqueue_valid(db, n: int = 5) -> list[int]:
    now = runner.utcnow()
    ids = [event_store.enqueue(db.engine, "quiz_submitted", u, now) for u in range(1, n)]
    ids.append(event_store.enqueue(db.engine, "rating_created", n, now, other_user_id=1))
    return ids


def test_killed_worker_events_are_done_by_the_next_worker_not_dead(
    population, fast_config: config_mod.Config, fast_config_file: Path, tmp_path: Path
) -> None:
    """Regression: after kill -9 of a worker, its events were reclaimed by claim time while
    its quiz run still held the (job, scope) slot; every retry was refused
    (RunConflictError) and re-claimed at once until max_attempts: all ended dead."""
    db = population
    ids = enqueue_valid(db)
    marker = tmp_path / "held-run-id"
    base = ["--db", db.url, "--config", str(fast_config_file)]
    held = subprocess.Popen(
        [sys.executable, str(HOLD_WORKER), str(marker), *base, "worker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "worker.log"
    proc: subprocess.Popen | None = None
    try:
        wait_for("the held quiz run", marker.exists, held)
        quiz_run = int(wait_for("the run id", lambda: marker.read_text(), held))
        # The second worker polls all along: before the fix it took the held events as soon
        # as their claim was older than the lease, while the held run was alive and beating.
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jobs", *base, "worker", "--json"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        wait_for("the second worker to poll", lambda: "polling every" in log.read_text(), proc)
        claimed_at = event_rows(db)[0].claimed_at
        lease = dt.timedelta(seconds=fast_config.runner.lease_s)
        wait_for("the claim to outlive the lease", lambda: runner.utcnow() > claimed_at + 2 * lease)
        rows = event_rows(db)
        assert [(r.status, r.attempts) for r in rows] == [("processing", 1)] * len(ids)
        (quiz,) = [r for r in run_rows(db, "quiz") if r.id == quiz_run]
        assert quiz.status == "running" and quiz.heartbeat_at > claimed_at + lease
    finally:
        held.kill()  # SIGKILL: no finally block, no finish_run, no release
        held.communicate(timeout=30)
    killed_at = time.monotonic()
    assert proc is not None
    try:
        wait_for(
            "every event to end",
            lambda: all(r.status in ("done", "dead") for r in event_rows(db)),
            proc,
        )
        recovered_s = time.monotonic() - killed_at
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log.read_text()
    stats = json.loads(out)

    rows = event_rows(db)
    assert [r.id for r in rows] == ids
    assert [r.status for r in rows] == ["done"] * len(ids), [r.error for r in rows]
    # the kill spent one attempt, the retry one more; deferrals spent none
    assert [r.attempts for r in rows] == [2] * len(ids)
    assert stats["events_done"] == len(ids) and stats["events_dead"] == 0
    quiz_runs = {r.id: r for r in run_rows(db, "quiz")}
    assert quiz_runs[quiz_run].status == "abandoned"
    assert [r.status for r in quiz_runs.values()] == ["abandoned", "succeeded"]
    workers = run_rows(db, "worker")
    assert workers[0].status == "abandoned"  # the killed batch
    done = sum(json.loads(r.metadata).get("events_done", 0) for r in workers[1:])
    assert done == len(ids)  # done exactly once, by the new worker's batches
    print(
        f"\nrecovery after kill -9: all {len(ids)} events done {recovered_s:.2f} s after the "
        f"kill (lease {lease.total_seconds():g} s), {stats['events_deferred']} deferrals, "
        f"{stats['batches']} batches"
    )


def test_poison_event_is_isolated_and_the_valid_events_are_done(
    population, fast_config: config_mod.Config
) -> None:
    """Regression: one event for user -1 failed its whole batch, and after max_attempts the
    five valid events of that batch were dead with it."""
    db = population
    ids = enqueue_valid(db)
    with db.engine.begin() as conn:  # the app's bug, past the enqueue checks
        poison = conn.execute(
            sa.insert(events)
            .values(kind="quiz_submitted", user_id=-1, status="pending", attempts=0)
            .values(created_at=runner.utcnow())
            .returning(events.c.id)
        ).scalar_one()
    stats = worker.run_worker(db.engine, db.url, fast_config, once=True)
    rows = {r.id: r for r in event_rows(db)}
    assert [rows[i].status for i in ids] == ["done"] * 5
    assert [rows[i].attempts for i in ids] == [1] * 5
    bad = rows[poison]
    assert bad.status == "dead"
    assert bad.error.startswith(f"event {poison} (quiz_submitted user -1): ScopeError: ")
    assert "user ids must be positive; got (-1,)" in bad.error
    assert "\x1b" not in bad.error
    assert (stats.events_done, stats.events_dead) == (5, 1)


def test_event_whose_job_is_running_is_deferred_without_spending_an_attempt(
    population, fast_config: config_mod.Config
) -> None:
    """Regression: a RunConflictError counted as the event's failure (attempts spent)."""
    db = population
    (event_id,) = [event_store.enqueue(db.engine, "user_changed", 3, runner.utcnow())]
    # another process is running the match job for user 3 and beating
    other_run, _ = ledger.start_run(
        db.engine,
        job_name="match",
        scope=Scope.users(3).label,
        trigger="on_demand",
        algorithm_version=fast_config.algorithm_version,
        config_hash=fast_config.content_hash,
        now=runner.utcnow(),
        lease_s=fast_config.runner.lease_s,
    )
    stats = worker.WorkerStats()
    assert worker.process_batch(db.engine, db.url, fast_config, stats=stats) == 1
    (row,) = event_rows(db)
    assert (row.status, row.attempts, row.deferrals) == ("pending", 0, 1)
    assert row.not_before > row.processed_at  # it waits before it is claimed again
    assert "already running" in row.error
    assert stats.events_deferred == 1 and stats.events_failed == 0
    ledger.finish_run(
        db.engine,
        other_run,
        status="succeeded",
        now=runner.utcnow(),
        duration_ms=1,
        error=None,
        metadata={},
    )
    stats = worker.run_worker(db.engine, db.url, fast_config, once=True)
    (row,) = event_rows(db)
    assert (row.id, row.status, row.attempts, row.deferrals) == (event_id, "done", 1, 1)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    import random

    rng = random.Random(0)
    waits = [worker.backoff_s(n, 1.0, 8.0, rng) for n in (1, 2, 3, 4, 5, 9)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len({round(w, 6) for w in waits[3:]}) == 3  # jitter spreads equal ceilings
