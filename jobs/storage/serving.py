"""The API's read, ``/api/suggestions``, as plain rows: no pandas, no numpy.

What serves a request should start as fast as the query runs; this module needs only
SQLAlchemy and the driver. :mod:`jobs.storage.api` builds its frame from the same query.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from jobs.storage import schema
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


def suggestion_rows(
    conn: sa.Connection, version: str, user_id: int, limit: int
) -> list[sa.RowMapping]:
    """The suggestions of ``user_id`` for ``version``, best first, as row mappings."""
    with translate_errors("suggestions"):
        return list(conn.execute(suggestions_query(version, user_id, limit)).mappings())


def user_exists(conn: sa.Connection, user_id: int) -> bool:
    """Whether ``users`` holds ``user_id`` (active or not)."""
    u = schema.users
    with translate_errors("look up user"):
        return conn.execute(sa.select(u.c.id).where(u.c.id == user_id)).first() is not None
