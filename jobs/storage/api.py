"""Read-side SQL for people who run the system: the API's read, coverage, staleness, history."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa

from jobs.storage import bulk, schema
from jobs.storage.engine import translate_errors

m = schema.match_scores


def suggestions_query(version: str, user_id: int, limit: int) -> sa.Select[Any]:
    """Exactly the ``/api/suggestions`` read: one indexed, ordered query on ``match_scores``.

    Ties on score are broken by candidate id so the order is total and repeatable.
    """
    return (
        sa.select(
            m.c.candidate_id,
            m.c.score,
            m.c.reasons,
            *(m.c[f"s_{name}"] for name in schema.SUBSCORE_COLUMNS),
            m.c.computed_at,
        )
        .where(m.c.algorithm_version == version, m.c.user_id == user_id)
        .order_by(m.c.score.desc(), m.c.candidate_id)
        .limit(limit)
    )


def suggestions(conn: sa.Connection, version: str, user_id: int, limit: int) -> pd.DataFrame:
    return bulk.read_frame(conn, suggestions_query(version, user_id, limit), what="suggestions")


def versions(conn: sa.Connection) -> list[str]:
    with translate_errors("list algorithm versions"):
        return list(
            conn.execute(
                sa.select(m.c.algorithm_version).distinct().order_by(m.c.algorithm_version)
            ).scalars()
        )


def coverage(conn: sa.Connection, version: str, now: dt.datetime) -> dict[str, Any]:
    """Active users, how many have a set for ``version``, and the oldest set's age."""
    u = schema.users
    per_user = (
        sa.select(m.c.user_id, sa.func.min(m.c.computed_at).label("computed_at"))
        .where(m.c.algorithm_version == version)
        .group_by(m.c.user_id)
        .subquery()
    )
    with translate_errors("coverage"):
        active = conn.execute(
            sa.select(sa.func.count()).select_from(u).where(u.c.is_active)
        ).scalar_one()
        covered, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(per_user.c.computed_at))
            .select_from(per_user.join(u, u.c.id == per_user.c.user_id))
            .where(u.c.is_active)
        ).one()
    if isinstance(oldest, str):  # SQLite aggregate over text timestamps
        oldest = dt.datetime.fromisoformat(oldest).replace(tzinfo=dt.UTC)
    elif oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return {
        "version": version,
        "active_users": int(active),
        "users_with_scores": int(covered),
        "coverage": (covered / active) if active else 0.0,
        "oldest_set": oldest,
        "staleness_hours": None if oldest is None else (now - oldest).total_seconds() / 3600,
    }


def job_history(conn: sa.Connection, limit_per_job: int = 10) -> pd.DataFrame:
    """The most recent runs of every job (newest first per job)."""
    j = schema.job_runs
    query = sa.select(
        j.c.id,
        j.c.job_name,
        j.c.status,
        j.c.trigger,
        j.c.scope,
        j.c.started_at,
        j.c.duration_ms,
        j.c.error,
    ).order_by(j.c.job_name, j.c.id.desc())
    frame = bulk.read_frame(conn, query, what="job history")
    return frame.groupby("job_name", sort=True).head(limit_per_job).reset_index(drop=True)


_STALE_SQL = """
SELECT u.id FROM users u
LEFT JOIN (
    SELECT user_id, MIN(computed_at) AS computed_at FROM match_scores
    WHERE algorithm_version = :version GROUP BY user_id
) s ON s.user_id = u.id
WHERE u.is_active AND (
    s.computed_at IS NULL
    OR EXISTS (SELECT 1 FROM user_quiz_vectors q
               WHERE q.user_id = u.id AND q.updated_at > s.computed_at)
    OR EXISTS (SELECT 1 FROM user_interest_vectors i
               WHERE i.user_id = u.id AND i.updated_at > s.computed_at)
    OR EXISTS (SELECT 1 FROM user_rating_preferences p
               WHERE p.user_id = u.id AND p.updated_at > s.computed_at)
)
ORDER BY u.id
"""


def stale_users(conn: sa.Connection, version: str) -> list[int]:
    """Active users with no set for ``version``, or whose own signals are newer than it."""
    with translate_errors("find stale users"):
        return [int(r) for r in conn.execute(sa.text(_STALE_SQL), {"version": version}).scalars()]


def users_with_scores(conn: sa.Connection, version: str) -> list[int]:
    with translate_errors("list users with scores"):
        return [
            int(u)
            for u in conn.execute(
                sa.select(m.c.user_id)
                .where(m.c.algorithm_version == version)
                .distinct()
                .order_by(m.c.user_id)
            ).scalars()
        ]
