"""SQL for the event queue the app writes and the worker drains.

An event is ``pending`` until a worker claims it (``processing``, ``attempts`` + 1), then
``done`` or ``coalesced``; a failure returns it to ``pending`` after a backoff
(``not_before``), or parks it as ``dead`` with its error. A claim belongs to the worker's
batch run (``claim_run_id``) and is handed out again once that run is no longer running or
its heartbeat is older than the lease, which is exactly when ``job_runs`` lets the killed
run's (job, scope) slot be taken over. Only the claiming run may finish, fail or release
its events, so a worker that lost its claim cannot overwrite the new owner's outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import sqlalchemy as sa

from jobs.errors import EventError
from jobs.storage.engine import is_postgres, translate_errors, writer
from jobs.storage.schema import EVENT_KINDS, events, job_runs, users

# The kinds whose other_user_id is required (and allowed), and what it names.
OTHER_USER = {
    "rating_created": "the rated profile",
    "like_created": "the liked, passed or blocked user",
    "conversation_revived": "the other side of the conversation",
}
KINDS_WITH_OTHER = tuple(OTHER_USER)
MAX_ERROR_CHARS = 4000
# ANSI escape sequences (CSI ... final byte, and two-byte escapes) and other control
# characters but tab and newline: a stored error is read in terminals, HTML and JSON.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class Event:
    id: int
    kind: str
    user_id: int
    other_user_id: int | None
    attempts: int
    deferrals: int = 0


def plain_text(text: str) -> str:
    """``text`` without ANSI colour codes or control characters, cut to what is stored."""
    return _CONTROL.sub("", text)[:MAX_ERROR_CHARS]


def enqueue(
    engine: sa.Engine, kind: str, user_id: int, now: dt.datetime, other_user_id: int | None = None
) -> int:
    """Append one event (what the app does when a user acts); returns its id.

    Raises ``EventError`` (nothing queued) for an unknown kind, a non-positive id, a user
    that does not exist, or a missing (or unexpected) ``other_user_id``.
    """
    if kind not in EVENT_KINDS:
        raise EventError(f"event kind must be one of {', '.join(EVENT_KINDS)}; got {kind!r}")
    if kind in KINDS_WITH_OTHER and other_user_id is None:
        raise EventError(f"a {kind} event needs other_user_id (--other: {OTHER_USER[kind]})")
    if kind not in KINDS_WITH_OTHER and other_user_id is not None:
        raise EventError(
            f"a {kind} event takes no other_user_id (only {', '.join(KINDS_WITH_OTHER)}); "
            f"got {other_user_id}"
        )
    named = {"user_id": user_id, "other_user_id": other_user_id}
    for field, value in named.items():
        if value is not None and int(value) <= 0:
            raise EventError(f"event {field} must be a positive user id; got {value}")
    if other_user_id is not None and int(other_user_id) == int(user_id):
        raise EventError(f"a {kind} event's other_user_id must differ from user_id; got {user_id}")
    wanted = {int(v) for v in named.values() if v is not None}
    with writer(engine).begin() as conn, translate_errors("enqueue event"):
        found = set(conn.execute(sa.select(users.c.id).where(users.c.id.in_(wanted))).scalars())
        for field, value in named.items():
            if value is not None and int(value) not in found:
                raise EventError(f"event {field} {value}: no such user")
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


def _reclaimable(stale: dt.datetime) -> sa.ColumnElement[bool]:
    """A ``processing`` event whose claim has lapsed (see the module docstring)."""
    live_runs = sa.select(job_runs.c.id).where(
        job_runs.c.status == "running", job_runs.c.heartbeat_at >= stale
    )
    return sa.and_(
        events.c.status == "processing",
        sa.or_(
            sa.and_(events.c.claim_run_id.is_(None), events.c.claimed_at < stale),
            sa.and_(
                events.c.claim_run_id.is_not(None),
                events.c.claim_run_id.not_in(live_runs.scalar_subquery()),
            ),
        ),
    )


def _due(now: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        events.c.status == "pending",
        sa.or_(events.c.not_before.is_(None), events.c.not_before <= now),
    )


def claim(engine: sa.Engine, limit: int, now: dt.datetime, lease_s: float) -> list[Event]:
    """Mark up to ``limit`` due pending events ``processing`` and return them, with every
    pending duplicate of theirs.

    Lapsed claims (a worker that died mid-batch) go back to pending first; their attempt
    stays spent, so an event that kills its worker every time still ends ``dead``. Then the
    oldest due events are picked, and every other pending event asking the same thing (kind,
    user, other user) — whatever batch it would have fallen in, and even if it waits out a
    backoff — is claimed with them, so a storm spread over the queue is coalesced into one
    refresh per user (``coalesced`` once the batch is done). On PostgreSQL,
    ``FOR UPDATE SKIP LOCKED`` lets several workers claim disjoint batches. The caller
    attaches the claim to its batch run (``attach``) right after.
    """
    stale = now - dt.timedelta(seconds=lease_s)
    claimed = {
        "status": "processing",
        "attempts": events.c.attempts + 1,
        "claimed_at": now,
        "claim_run_id": None,
        "not_before": None,
    }
    returned = (
        events.c.id,
        events.c.kind,
        events.c.user_id,
        events.c.other_user_id,
        events.c.attempts,
        events.c.deferrals,
    )
    with writer(engine).begin() as conn, translate_errors("claim events"):
        postgres = is_postgres(conn)
        conn.execute(
            sa.update(events).where(_reclaimable(stale)).values(status="pending", claim_run_id=None)
        )
        pick = sa.select(events.c.id).where(_due(now)).order_by(events.c.id).limit(limit)
        if postgres:
            pick = pick.with_for_update(skip_locked=True)
        rows = conn.execute(
            sa.update(events)
            .where(events.c.id.in_(pick.scalar_subquery()))
            .values(**claimed)
            .returning(*returned)
        ).all()
        keys = sorted({(r.kind, r.user_id, r.other_user_id) for r in rows}, key=str)
        for start in range(0, len(keys), 200):
            chunk = keys[start : start + 200]
            same = sa.or_(
                *(
                    sa.and_(
                        events.c.kind == kind,
                        events.c.user_id == user,
                        events.c.other_user_id.is_(None)
                        if other is None
                        else events.c.other_user_id == other,
                    )
                    for kind, user, other in chunk
                )
            )
            dupes = sa.select(events.c.id).where(events.c.status == "pending", same)
            if postgres:
                dupes = dupes.with_for_update(skip_locked=True)
            rows += conn.execute(
                sa.update(events)
                .where(events.c.id.in_(dupes.scalar_subquery()))
                .values(**claimed)
                .returning(*returned)
            ).all()
    return sorted((Event(*row) for row in rows), key=lambda e: e.id)


def attach(engine: sa.Engine, ids: list[int], run_id: int) -> int:
    """Make ``run_id`` the owner of the claimed events; returns how many it now owns."""
    if not ids:
        return 0
    with writer(engine).begin() as conn, translate_errors("attach events to run"):
        return conn.execute(
            sa.update(events)
            .where(
                events.c.id.in_(ids),
                events.c.status == "processing",
                events.c.claim_run_id.is_(None),
            )
            .values(claim_run_id=run_id)
        ).rowcount


def _owned(ids: list[int], run_id: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        events.c.id.in_(ids), events.c.status == "processing", events.c.claim_run_id == run_id
    )


def finish(engine: sa.Engine, ids: list[int], run_id: int, status: str, now: dt.datetime) -> int:
    """Mark ``run_id``'s claimed events ``done`` or ``coalesced``; returns how many."""
    if not ids:
        return 0
    with writer(engine).begin() as conn:
        return finish_in(conn, ids, run_id, status, now)


def finish_in(
    conn: sa.Connection, ids: list[int], run_id: int, status: str, now: dt.datetime
) -> int:
    """:func:`finish` inside the caller's transaction (the event's own changes commit with
    its completion)."""
    if status not in ("done", "coalesced"):
        raise ValueError(f"status must be 'done' or 'coalesced'; got {status!r}")
    if not ids:
        return 0
    with translate_errors(f"mark events {status}"):
        return conn.execute(
            sa.update(events)
            .where(_owned(ids, run_id))
            .values(status=status, processed_at=now, error=None, claim_run_id=None)
        ).rowcount


def fail(
    engine: sa.Engine,
    ids: list[int],
    run_id: int,
    error: str,
    *,
    max_attempts: int,
    now: dt.datetime,
    retry_at: dt.datetime | None = None,
) -> dict[str, int]:
    """Return failed events to the queue (not before ``retry_at``), or park them as ``dead``.

    ``max_attempts=0`` parks them at once (the event itself is invalid). The error is stored
    as plain text. Returns ``{"dead": n, "retry": m}``.
    """
    if not ids:
        return {"dead": 0, "retry": 0}
    dead = events.c.attempts >= max_attempts
    with writer(engine).begin() as conn, translate_errors("mark events failed"):
        statuses = conn.execute(
            sa.update(events)
            .where(_owned(ids, run_id))
            .values(
                status=sa.case((dead, "dead"), else_="pending"),
                error=plain_text(error),
                processed_at=now,
                claim_run_id=None,
                not_before=sa.case(
                    (dead, None), else_=sa.literal(retry_at, events.c.not_before.type)
                ),
            )
            .returning(events.c.status)
        ).scalars()
        outcome = {"dead": 0, "retry": 0}
        for status in statuses:
            outcome["dead" if status == "dead" else "retry"] += 1
        return outcome


def release(
    engine: sa.Engine,
    ids: list[int],
    run_id: int,
    reason: str,
    *,
    now: dt.datetime,
    retry_at: dt.datetime,
) -> int:
    """Hand claimed events back unprocessed: the attempt is refunded, a deferral counted."""
    if not ids:
        return 0
    with writer(engine).begin() as conn, translate_errors("release events"):
        return conn.execute(
            sa.update(events)
            .where(_owned(ids, run_id))
            .values(
                status="pending",
                attempts=events.c.attempts - 1,
                deferrals=events.c.deferrals + 1,
                error=plain_text(f"deferred: {reason}"),
                processed_at=now,
                claim_run_id=None,
                not_before=retry_at,
            )
        ).rowcount


def pending_due_at(conn: sa.Connection, now: dt.datetime) -> dt.datetime | None:
    """When the earliest pending event is due (``now`` if one is due already; ``None``:
    nothing is pending)."""
    with translate_errors("read the event queue"):
        pending, waiting, earliest = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(events.c.not_before),
                sa.func.min(events.c.not_before),
            ).where(events.c.status == "pending")
        ).one()
    if not pending:
        return None
    return now if waiting < pending or earliest <= now else earliest


def counts_by_status(conn: sa.Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(events.c.status, sa.func.count()).group_by(events.c.status)).all()
    return {status: int(n) for status, n in rows}


def backlog(conn: sa.Connection, now: dt.datetime) -> dict[str, float | int | None]:
    """Queue depth (pending events) and the age in seconds of the oldest pending one."""
    with translate_errors("read the event queue backlog"):
        depth, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(events.c.created_at)).where(
                events.c.status == "pending"
            )
        ).one()
    if isinstance(oldest, str):  # SQLite aggregate over text timestamps
        oldest = dt.datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    age = None if oldest is None else max((now - oldest).total_seconds(), 0.0)
    return {"depth": int(depth), "oldest_pending_age_s": None if age is None else round(age, 1)}


TERMINAL_STATUSES = ("done", "coalesced", "dead")


def events_after(conn: sa.Connection, floor_id: int) -> list[tuple[int, int, int | None, str]]:
    """``(id, user_id, other_user_id, status)`` of every event with an id above
    ``floor_id``, in id order (a primary-key range: the queue's recent part)."""
    query = (
        sa.select(events.c.id, events.c.user_id, events.c.other_user_id, events.c.status)
        .where(events.c.id > int(floor_id))
        .order_by(events.c.id)
    )
    with translate_errors("read recent events"):
        rows = conn.execute(query).all()
    return [(int(i), int(u), None if o is None else int(o), str(s)) for i, u, o, s in rows]


def settled_floor(conn: sa.Connection) -> int:
    """An id at or below which every event is settled: just below the oldest open (pending
    or processing) event, else the newest id (0 for an empty queue). Both are index reads."""
    with translate_errors("read the oldest open event"):
        oldest_open = conn.execute(
            sa.select(sa.func.min(events.c.id)).where(
                events.c.status.in_(("pending", "processing"))
            )
        ).scalar_one_or_none()
        if oldest_open is not None:
            return int(oldest_open) - 1
        newest = conn.execute(sa.select(sa.func.max(events.c.id))).scalar_one_or_none()
    return int(newest or 0)
