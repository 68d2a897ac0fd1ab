"""SQL for the event queue the app writes and the worker drains."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from jobs.storage.engine import is_postgres, translate_errors, writer
from jobs.storage.schema import EVENT_KINDS, events


@dataclasses.dataclass(frozen=True)
class Event:
    id: int
    kind: str
    user_id: int
    other_user_id: int | None
    attempts: int


def enqueue(
    engine: sa.Engine, kind: str, user_id: int, now: dt.datetime, other_user_id: int | None = None
) -> int:
    """Append one event (what the app does when a user acts); returns its id."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind must be one of {EVENT_KINDS}; got {kind!r}")
    if kind == "rating_created" and other_user_id is None:
        raise ValueError("a rating_created event needs other_user_id (the rated profile)")
    with writer(engine).begin() as conn, translate_errors("enqueue event"):
        return int(
            conn.execute(
                sa.insert(events)
                .values(
                    kind=kind,
                    user_id=user_id,
                    other_user_id=other_user_id,
                    status="pending",
                    attempts=0,
                    created_at=now,
                )
                .returning(events.c.id)
            ).scalar_one()
        )


def claim(engine: sa.Engine, limit: int, now: dt.datetime, lease_s: float) -> list[Event]:
    """Mark up to ``limit`` pending events ``processing`` for this worker and return them.

    Claims older than ``lease_s`` (a worker that died mid-batch) go back to pending first.
    On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` lets several workers claim disjoint batches.
    """
    stale = now - dt.timedelta(seconds=lease_s)
    with writer(engine).begin() as conn, translate_errors("claim events"):
        conn.execute(
            sa.update(events)
            .where(events.c.status == "processing", events.c.claimed_at < stale)
            .values(status="pending")
        )
        pick = (
            sa.select(events.c.id)
            .where(events.c.status == "pending")
            .order_by(events.c.id)
            .limit(limit)
        )
        if is_postgres(conn):
            pick = pick.with_for_update(skip_locked=True)
        rows = conn.execute(
            sa.update(events)
            .where(events.c.id.in_(pick.scalar_subquery()))
            .values(status="processing", attempts=events.c.attempts + 1, claimed_at=now)
            .returning(
                events.c.id,
                events.c.kind,
                events.c.user_id,
                events.c.other_user_id,
                events.c.attempts,
            )
        ).all()
    return sorted((Event(*row) for row in rows), key=lambda e: e.id)


def finish(engine: sa.Engine, ids: list[int], status: str, now: dt.datetime) -> None:
    """Mark claimed events ``done`` or ``coalesced``."""
    if status not in ("done", "coalesced"):
        raise ValueError(f"status must be 'done' or 'coalesced'; got {status!r}")
    if not ids:
        return
    with writer(engine).begin() as conn, translate_errors(f"mark events {status}"):
        conn.execute(
            sa.update(events)
            .where(events.c.id.in_(ids))
            .values(status=status, processed_at=now, error=None)
        )


def fail(
    engine: sa.Engine, ids: list[int], error: str, max_attempts: int, now: dt.datetime
) -> None:
    """Return failed events to the queue, or park them as ``dead`` after ``max_attempts``."""
    if not ids:
        return
    with writer(engine).begin() as conn, translate_errors("mark events failed"):
        conn.execute(
            sa.update(events)
            .where(events.c.id.in_(ids))
            .values(
                status=sa.case((events.c.attempts >= max_attempts, "dead"), else_="pending"),
                error=error[:4000],
                processed_at=now,
            )
        )


def counts_by_status(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(events.c.status, sa.func.count()).group_by(events.c.status)).all()
    return {status: int(n) for status, n in rows}
