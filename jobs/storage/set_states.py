"""SQL on ``match_set_states``: what the match job knows of a user's set beyond its rows.

``stale``: the set is out of date and known to be (a reverse fan-out past
``fanout.max_reverse`` left the user for later); the nightly's backfill takes these users
first. ``empty``: the user was scored at ``marked_at`` and had no candidate at all; the
backfill skips them until one of their signals is newer than that, or an event rescores
them. Written only by the match job, in the transaction that writes the sets.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobs.storage import bulk, schema
from jobs.storage.engine import is_postgres, translate_errors

TABLE = schema.match_set_states


def _delete(
    conn: sa.Connection,
    version: str,
    user_ids: npt.NDArray[np.int64],
    before: dt.datetime | None = None,
) -> int:
    if user_ids.size == 0:
        return 0
    sql = "DELETE FROM match_set_states WHERE algorithm_version = :v AND " + bulk.ids_clause(
        conn, "user_id", "ids"
    )
    params: dict[str, object] = {"v": version, "ids": bulk.ids_param(conn, user_ids)}
    if before is not None:
        sql += " AND marked_at < :before"
        params["before"] = schema.UTCDateTime().process_bind_param(before, conn.dialect)
    return int(conn.execute(sa.text(sql), params).rowcount or 0)


def _upsert(
    conn: sa.Connection,
    version: str,
    user_ids: npt.NDArray[np.int64],
    state: str,
    reason: str | None,
    now: dt.datetime,
) -> None:
    """Insert or overwrite marks: two workers marking one user at once must not collide."""
    if user_ids.size == 0:
        return
    dialect = postgresql if is_postgres(conn) else sqlite
    rows = [
        {
            "algorithm_version": version,
            "user_id": int(u),
            "state": state,
            "reason": reason,
            "marked_at": now,
        }
        for u in user_ids
    ]
    stmt = dialect.insert(TABLE)
    stmt = stmt.on_conflict_do_update(
        index_elements=[TABLE.c.algorithm_version, TABLE.c.user_id],
        set_={
            "state": stmt.excluded.state,
            "reason": stmt.excluded.reason,
            "marked_at": stmt.excluded.marked_at,
        },
    )
    conn.execute(stmt, rows)


def mark_stale(
    conn: sa.Connection, version: str, user_ids: npt.ArrayLike, reason: str, now: dt.datetime
) -> int:
    """Mark ``user_ids``' ``version`` sets stale (replacing any mark); how many."""
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    with translate_errors("mark match sets stale"):
        _upsert(conn, version, ids, "stale", reason, now)
    return int(ids.size)


def record_scored(
    conn: sa.Connection,
    version: str,
    scored_ids: npt.ArrayLike,
    empty_ids: npt.ArrayLike,
    now: dt.datetime,
    *,
    marked_before: dt.datetime | None = None,
) -> None:
    """``scored_ids`` were just scored: their marks go, and ``empty_ids`` (among them, no
    candidate at all) are recorded ``empty``.

    ``marked_before`` (the nightly: its start) keeps the marks made since, by events that
    ran while it computed: those users' sets are stale again already.
    """
    scored = np.unique(np.asarray(scored_ids, dtype=np.int64))
    empty = np.intersect1d(np.asarray(empty_ids, dtype=np.int64), scored)
    with translate_errors("record scored match sets"):
        _delete(conn, version, scored, before=marked_before)
        if marked_before is not None and empty.size:
            kept = marked_ids(conn, version)
            empty = np.setdiff1d(empty, kept)
        _upsert(conn, version, empty, "empty", None, now)


def marked_ids(
    conn: sa.Connection, version: str, state: str | None = None
) -> npt.NDArray[np.int64]:
    """Sorted users with a mark for ``version`` (of ``state``, if given)."""
    query = sa.select(TABLE.c.user_id).where(TABLE.c.algorithm_version == version)
    if state is not None:
        query = query.where(TABLE.c.state == state)
    frame = bulk.read_frame(conn, query.order_by(TABLE.c.user_id), what="read match set states")
    return frame["user_id"].to_numpy(dtype=np.int64)


def forget(conn: sa.Connection, user_ids: npt.ArrayLike) -> int:
    """Every version's marks of ``user_ids`` (a deactivated user); how many."""
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    if ids.size == 0:
        return 0
    with translate_errors("forget match set states"):
        sql = f"DELETE FROM match_set_states WHERE {bulk.ids_clause(conn, 'user_id', 'ids')}"
        return int(conn.execute(sa.text(sql), {"ids": bulk.ids_param(conn, ids)}).rowcount or 0)
