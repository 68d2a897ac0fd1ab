"""Event queue: claims are exclusive and belong to a run, lapsed claims return, releases
spend no attempt, failures wait and end as dead, bad events are refused at enqueue."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import sqlalchemy as sa

from jobs.errors import EventError
from jobs.storage import events as store
from jobs.storage import ledger
from jobs.storage.schema import events, job_runs, users

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
LEASE = 60
_scopes = itertools.count(1)


def s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def add_users(db, *ids: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(users), [{"id": i, "seeking_mask": 2, "created_at": T0} for i in ids]
        )


def start_run(db, now: dt.datetime = T0) -> int:
    run_id, _ = ledger.start_run(
        db.engine,
        job_name="worker",
        scope=f"worker:test:{next(_scopes)}",
        trigger="event",
        algorithm_version="v1",
        config_hash="h",
        now=now,
        lease_s=LEASE,
    )
    return run_id


def claim(db, now: dt.datetime, run_id: int | None = None, limit: int = 10) -> list[int]:
    claimed = store.claim(db.engine, limit, now, lease_s=LEASE)
    if run_id is not None:
        store.attach(db.engine, [e.id for e in claimed], run_id)
    return [e.id for e in claimed]


def rows(db) -> dict[int, sa.Row]:
    with db.engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.select(events))}


def test_claim_finish_and_counts(db) -> None:
    add_users(db, 1, 2, 3, 4)
    a = store.enqueue(db.engine, "quiz_submitted", 1, T0)
    b = store.enqueue(db.engine, "rating_created", 2, T0, other_user_id=3)
    c = store.enqueue(db.engine, "user_changed", 4, T0)
    run = start_run(db)
    first = store.claim(db.engine, 2, T0, lease_s=LEASE)
    assert [e.id for e in first] == [a, b]
    assert first[1].other_user_id == 3 and first[0].attempts == 1
    assert store.attach(db.engine, [a, b], run) == 2
    # claimed events are not handed out twice
    assert claim(db, T0, run) == [c]
    assert claim(db, T0) == []
    assert store.finish(db.engine, [a], run, "done", T0) == 1
    assert store.finish(db.engine, [b], run, "coalesced", T0) == 1
    with db.engine.connect() as conn:
        assert store.counts_by_status(conn) == {"done": 1, "coalesced": 1, "processing": 1}


def test_claim_of_a_live_run_holds_past_the_lease_and_lapses_with_its_heartbeat(db) -> None:
    """Regression: a claim expired by its age alone, so a killed worker's events came back
    while its run still held the job slot; now the claim lives and dies with the run."""
    add_users(db, 5)
    e = store.enqueue(db.engine, "interests_changed", 5, T0)
    run = start_run(db)
    assert claim(db, T0, run) == [e]
    # a long batch: the run still beats at 100 s, so the claim holds past claimed_at + lease
    ledger.heartbeat(db.engine, run, s(100))
    assert claim(db, s(150)) == []
    # the worker was killed after that beat: the claim lapses when the heartbeat is stale
    assert claim(db, s(161)) == [e]
    assert rows(db)[e].attempts == 2  # a crash spends its attempt (a poison may cause it)


def test_claim_lapses_at_once_when_its_run_is_finished_or_abandoned(db) -> None:
    add_users(db, 6, 7)
    e = store.enqueue(db.engine, "user_changed", 6, T0)
    f = store.enqueue(db.engine, "user_changed", 7, T0)
    done_run, dead_run = start_run(db), start_run(db)
    assert claim(db, T0, limit=1) == [e] and store.attach(db.engine, [e], done_run) == 1
    assert claim(db, T0, limit=1) == [f] and store.attach(db.engine, [f], dead_run) == 1
    ledger.finish_run(
        db.engine, done_run, status="failed", now=s(1), duration_ms=1, error="x", metadata={}
    )
    assert claim(db, s(2)) == [e]
    assert ledger.abandon_stale(db.engine, now=s(61), lease_s=LEASE) == [dead_run]
    with db.engine.connect() as conn:
        assert (
            conn.execute(sa.select(job_runs.c.status).where(job_runs.c.id == dead_run)).scalar_one()
            == "abandoned"
        )
    assert claim(db, s(61)) == [f]


def test_claim_without_run_lapses_by_claim_time(db) -> None:
    add_users(db, 8)
    e = store.enqueue(db.engine, "user_changed", 8, T0)
    assert claim(db, T0) == [e]  # the worker died before attaching its run
    assert claim(db, s(30)) == []
    assert claim(db, s(61)) == [e]


def test_release_spends_no_attempt_and_waits(db) -> None:
    add_users(db, 9)
    e = store.enqueue(db.engine, "quiz_submitted", 9, T0)
    run = start_run(db)
    assert claim(db, T0, run) == [e]
    released = store.release(
        db.engine, [e], run, "job 'quiz' is already running", now=T0, retry_at=s(5)
    )
    assert released == 1
    row = rows(db)[e]
    assert (row.status, row.attempts, row.deferrals) == ("pending", 0, 1)
    assert row.error == "deferred: job 'quiz' is already running"
    assert claim(db, s(4)) == []
    (again,) = store.claim(db.engine, 10, s(5), lease_s=LEASE)
    assert (again.id, again.attempts, again.deferrals) == (e, 1, 1)


def test_failures_wait_then_die_after_max_attempts_and_only_the_owner_decides(db) -> None:
    add_users(db, 5)
    e = store.enqueue(db.engine, "interests_changed", 5, T0)
    run = start_run(db)
    assert claim(db, T0, run) == [e]
    other = start_run(db)
    # a worker that does not own the claim changes nothing
    assert store.finish(db.engine, [e], other, "done", T0) == 0
    outcome = store.fail(db.engine, [e], run, "boom", max_attempts=2, now=T0, retry_at=s(3))
    assert outcome == {"dead": 0, "retry": 1}
    assert rows(db)[e].status == "pending"
    assert claim(db, s(2)) == []
    assert claim(db, s(3), run) == [e]
    outcome = store.fail(db.engine, [e], run, "boom again", max_attempts=2, now=s(3))
    assert outcome == {"dead": 1, "retry": 0}
    row = rows(db)[e]
    assert (row.status, row.error, row.claim_run_id) == ("dead", "boom again", None)


def test_stored_error_is_plain_text(db) -> None:
    """Regression: errors carrying terminal colour codes were stored as they came."""
    add_users(db, 5)
    e = store.enqueue(db.engine, "user_changed", 5, T0)
    run = start_run(db)
    assert claim(db, T0, run) == [e]
    coloured = "\x1b[31mScopeError\x1b[0m: user ids must be positive\x07\ncaused by x\tY"
    store.fail(db.engine, [e], run, coloured, max_attempts=1, now=T0)
    assert rows(db)[e].error == "ScopeError: user ids must be positive\ncaused by x\tY"


@pytest.mark.parametrize(
    ("kind", "user", "other", "message"),
    [
        ("quiz_done", 1, None, "event kind must be one of"),
        ("rating_created", 1, None, "needs other_user_id"),
        ("quiz_submitted", 1, 2, "takes no other_user_id"),
        ("quiz_submitted", -7, None, "user_id must be a positive user id; got -7"),
        ("quiz_submitted", 0, None, "user_id must be a positive user id; got 0"),
        ("rating_created", 1, -1, "other_user_id must be a positive user id; got -1"),
        ("quiz_submitted", 99, None, "user_id 99: no such user"),
        ("rating_created", 1, 98, "other_user_id 98: no such user"),
    ],
)
def test_bad_events_are_refused_with_a_clear_error(db, kind, user, other, message) -> None:
    """Regression: `event quiz_submitted -7` was queued, and its batch failed with it."""
    add_users(db, 1, 2)
    with pytest.raises(EventError, match=message):
        store.enqueue(db.engine, kind, user, T0, other_user_id=other)
    assert rows(db) == {}
