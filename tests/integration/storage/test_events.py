"""Event queue: claims are exclusive, stale claims return, failures end as dead."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from jobs.storage import events as store
from jobs.storage.schema import events

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def statuses(db) -> dict[int, str]:
    with db.engine.connect() as conn:
        return dict(conn.execute(sa.select(events.c.id, events.c.status)).all())


def test_claim_finish_and_counts(db) -> None:
    a = store.enqueue(db.engine, "quiz_submitted", 1, T0)
    b = store.enqueue(db.engine, "rating_created", 2, T0, other_user_id=3)
    c = store.enqueue(db.engine, "user_changed", 4, T0)
    first = store.claim(db.engine, 2, T0, lease_s=60)
    assert [e.id for e in first] == [a, b]
    assert first[1].other_user_id == 3 and first[0].attempts == 1
    # claimed events are not handed out twice
    assert [e.id for e in store.claim(db.engine, 10, T0, lease_s=60)] == [c]
    assert store.claim(db.engine, 10, T0, lease_s=60) == []
    store.finish(db.engine, [a], "done", T0)
    store.finish(db.engine, [b], "coalesced", T0)
    with db.engine.connect() as conn:
        assert store.counts_by_status(conn) == {"done": 1, "coalesced": 1, "processing": 1}


def test_stale_claims_return_and_failures_die_after_max_attempts(db) -> None:
    e = store.enqueue(db.engine, "interests_changed", 5, T0)
    assert [x.id for x in store.claim(db.engine, 5, T0, lease_s=60)] == [e]
    # the worker died: within the lease nothing is handed out, after it the event returns
    assert store.claim(db.engine, 5, T0 + dt.timedelta(seconds=30), lease_s=60) == []
    again = store.claim(db.engine, 5, T0 + dt.timedelta(seconds=61), lease_s=60)
    assert [(x.id, x.attempts) for x in again] == [(e, 2)]
    store.fail(db.engine, [e], "boom", max_attempts=3, now=T0)
    assert statuses(db)[e] == "pending"
    (third,) = store.claim(db.engine, 5, T0, lease_s=60)
    assert third.attempts == 3
    store.fail(db.engine, [e], "boom again", max_attempts=3, now=T0)
    assert statuses(db)[e] == "dead"
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(events.c.error)).scalar_one() == "boom again"


def test_bad_events_are_refused_with_a_clear_error(db) -> None:
    with pytest.raises(ValueError, match="event kind must be one of"):
        store.enqueue(db.engine, "quiz_done", 1, T0)
    with pytest.raises(ValueError, match="needs other_user_id"):
        store.enqueue(db.engine, "rating_created", 1, T0)
