"""The API's read, ``/api/suggestions``, as plain rows: no pandas, no numpy.

What serves a request should start as fast as the query runs; this module needs only
SQLAlchemy and the driver. :mod:`jobs.storage.api` builds its frame from the same query.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from compute import spread
from jobs.storage import schema
from jobs.storage.engine import translate_errors

m = schema.match_scores


def _mod(x: Any) -> Any:
    """``x mod P`` for x ≥ 0, as ``x - (x / P) * P`` (integer division): a ``%`` would not
    survive the COPY path of :func:`jobs.storage.bulk.read_frame`, which inlines parameters."""
    return x - x // spread.SPREAD_PRIME * spread.SPREAD_PRIME


def suggestions_query(version: str, user_id: int, limit: int) -> sa.Select[Any]:
    """Exactly the ``/api/suggestions`` read: one indexed, ordered query on ``match_scores``.

    Ties on score are broken by the exposure spread the match job ranks by,
    :func:`compute.sorting.spread_keys` of (user, candidate, the version's seed), in the
    same integer arithmetic (:mod:`compute.spread`; every product < 2**63 on PostgreSQL and
    SQLite): the order is total, repeatable and the job's own. The user's part of the key
    is a constant of the query (``spread_offset``); the candidate's part ``x`` is computed
    once per row in a subquery and the key is ``x³ mod P``. The reasons' text comes from
    ``reason_patterns`` by primary key, joined after the limit so that only the rows
    returned are looked up; the float4 scores are returned as float8 (the scorer's float32
    values, exactly, on both engines).
    """
    p = schema.reason_patterns
    numbers = ("score", *(f"s_{n}" for n in schema.SUBSCORE_COLUMNS))
    offset = spread.spread_offset(user_id, spread.spread_seed(version))
    x = _mod(_mod(m.c.candidate_id) * spread.SPREAD_CANDIDATE_FACTOR + offset)
    listed = (
        sa.select(
            m.c.candidate_id,
            m.c.reason_id,
            *(m.c[c] for c in numbers),
            m.c.computed_at,
            x.label("spread_x"),
        )
        .where(m.c.algorithm_version == version, m.c.user_id == user_id)
        .subquery("listed")
    )
    key = _mod(_mod(listed.c.spread_x * listed.c.spread_x) * listed.c.spread_x)
    top = (
        sa.select(
            listed.c.candidate_id,
            listed.c.reason_id,
            *(listed.c[c] for c in numbers),
            listed.c.computed_at,
            key.label("spread"),
        )
        .order_by(listed.c.score.desc(), key)
        .limit(limit)
        .subquery("top")
    )
    return (
        sa.select(
            top.c.candidate_id,
            sa.cast(top.c.score, sa.Float).label("score"),
            p.c.reasons,
            *(sa.cast(top.c[c], sa.Float).label(c) for c in numbers[1:]),
            top.c.computed_at,
        )
        .join_from(top, p, p.c.id == top.c.reason_id)
        .order_by(top.c.score.desc(), top.c.spread)
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
