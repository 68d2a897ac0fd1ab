"""The publish guard: no published pair may be one the app has forbidden since the snapshot.

A set is computed from a snapshot of the source tables and published minutes later (a
nightly) or milliseconds later (an event). Whatever the app recorded in between must hold
after the publish: a like, pass or block between two users, a deactivation, a changed age
range, gender sought, distance limit or location. So the publishing transaction ends by
locking likes and users against writers (PostgreSQL: SHARE, taken NOWAIT and retried so
that we never wait inside a lock cycle with the app; SQLite: the transaction already holds
the database's write lock) and deleting every row those tables now forbid.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from jobs.errors import StorageError
from jobs.storage import bulk
from jobs.storage import population as population_store
from jobs.storage.engine import is_postgres, translate_errors

LOCK_BUDGET_S = 30.0
LOCK_FUNCTION = "matchjobs_lock_exclusion_sources"


def lock_exclusion_sources(conn: sa.Connection, budget_s: float = LOCK_BUDGET_S) -> float:
    """PostgreSQL: hold SHARE locks on likes and users until commit; seconds waited.

    While held, no like, pass, block or profile change can commit, and every one committed
    before is visible to the next statement. Taken NOWAIT inside a savepoint and retried
    with jittered backoff: this transaction never waits on the app's writers, so it can
    never be part of a deadlock that the server would break by aborting the app's side.
    """
    if not is_postgres(conn):
        return 0.0
    started = time.monotonic()
    pause = 0.005
    while True:
        try:
            with conn.begin_nested():
                # Migration 0005: a SECURITY DEFINER function, so a role that may only read
                # likes and users can still hold them (SHARE needs UPDATE rights).
                conn.exec_driver_sql(f"SELECT {LOCK_FUNCTION}()")
            return time.monotonic() - started
        except sa.exc.OperationalError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate != "55P03":  # lock_not_available
                raise StorageError(f"lock likes and users failed: {exc.orig}") from exc
            waited = time.monotonic() - started
            if waited >= budget_s:
                raise StorageError(
                    f"lock likes and users failed: the app's writers held them for "
                    f"{waited:.1f} s (budget {budget_s:.0f} s); nothing was published"
                ) from exc
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.5)


@dataclasses.dataclass(frozen=True)
class Purged:
    """What :func:`purge_forbidden` removed, and what holding the app's tables cost."""

    rows_excluded: int = 0
    rows_changed_user: int = 0
    users_changed: int = 0
    lock_wait_s: float = 0.0
    held_s: float = 0.0

    @property
    def rows(self) -> int:
        return self.rows_excluded + self.rows_changed_user

    def figures(self) -> dict[str, float]:
        return {
            "rows_excluded": self.rows_excluded,
            "rows_changed_user": self.rows_changed_user,
            "users_changed": self.users_changed,
            "lock_wait_s": round(self.lock_wait_s, 4),
            "held_s": round(self.held_s, 4),
        }


def purge_forbidden(
    conn: sa.Connection,
    table: str,
    version: str,
    snapshot: population_store.FilterSnapshot,
    *,
    user_ids: npt.NDArray[np.int64] | None = None,
    published_ids: npt.NDArray[np.int64] | None = None,
) -> Purged:
    """Delete the rows of ``table`` that exclusions and profile changes recorded up to now
    forbid.

    Call it as the last write of the publishing transaction. ``snapshot`` was taken before
    the rows were computed; a user in ``published_ids`` (default: the snapshot's) whose
    filter columns changed since, who left or who is missing from the snapshot loses every
    row on either side (their own list is rebuilt by the event path or the backfill).
    ``user_ids`` restricts the purge to those users' lists (the event path); ``None`` purges
    the whole table (a nightly stage). ``held_s`` is how long the app's writers to likes and
    users are held up from here to the end of this function (the commit adds a little).
    """
    if user_ids is not None and user_ids.size == 0:
        return Purged()
    with translate_errors(f"purge forbidden pairs from {table}"):
        lock_wait = lock_exclusion_sources(conn)
        held_from = time.monotonic()
        published = snapshot.user_ids if published_ids is None else published_ids
        changed = population_store.changed_since(conn, snapshot, published)
        scope = "t.algorithm_version = :v"
        params: dict[str, Any] = {"v": version}
        if user_ids is not None:
            scope += " AND " + bulk.ids_clause(conn, "t.user_id", "ids")
            params["ids"] = bulk.ids_param(conn, user_ids)
        excluded = 0
        for mine, theirs in (("user_id", "target_id"), ("target_id", "user_id")):
            if is_postgres(conn):
                # A join, so that the planner can drive it from likes into the primary key.
                sql = (
                    f'DELETE FROM "{table}" AS t USING likes AS l WHERE {scope} '
                    f"AND t.user_id = l.{mine} AND t.candidate_id = l.{theirs}"
                )
            else:
                sql = (
                    f'DELETE FROM "{table}" AS t WHERE {scope} AND EXISTS (SELECT 1 FROM likes '
                    f"AS l WHERE l.{mine} = t.user_id AND l.{theirs} = t.candidate_id)"
                )
            excluded += int(conn.execute(sa.text(sql), params).rowcount or 0)
        changed_rows = 0
        if changed.size:
            params["changed"] = bulk.ids_param(conn, changed)
            sql = (
                f'DELETE FROM "{table}" AS t WHERE {scope} AND ('
                f"{bulk.ids_clause(conn, 't.user_id', 'changed')} OR "
                f"{bulk.ids_clause(conn, 't.candidate_id', 'changed')})"
            )
            changed_rows = int(conn.execute(sa.text(sql), params).rowcount or 0)
    return Purged(
        rows_excluded=excluded,
        rows_changed_user=changed_rows,
        users_changed=int(changed.size),
        lock_wait_s=lock_wait,
        held_s=time.monotonic() - held_from,
    )
