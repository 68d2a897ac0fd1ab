"""SQL of the event path's immediate step: what a like, pass, block or deactivation changes
at once, before (and whatever happens to) any recompute.

A pass or block is a promise that the pair is never shown again, and a deactivated user must
leave everybody's list now, not when their lists are next rescored. So these deletions run in
the transaction that completes the event (the worker's role holds every job's grants): the
pair's rows leave ``match_scores`` in every version; a deactivated user's rows leave every
derived table (:data:`USER_COLUMNS`, checked against ``schema.DERIVED_OWNERS``) and every
other user's list. They only delete: the rows each job writes stay that job's.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from jobs.storage import bulk, schema
from jobs.storage.engine import translate_errors

# derived table -> the columns naming a user in it (every one of them is cleared)
USER_COLUMNS: dict[str, tuple[str, ...]] = {
    "user_quiz_vectors": ("user_id",),
    "user_interest_index": ("user_id",),
    "user_interest_vectors": ("user_id",),
    "profile_rating_aggregates": ("profile_id",),
    "profile_rating_standing": ("profile_id",),
    "user_rating_preferences": ("user_id",),
    "user_like_behaviour": ("user_id",),
    "user_taste_vectors": ("user_id",),
    "match_scores": ("user_id", "candidate_id"),
    "match_set_states": ("user_id",),
    "reason_patterns": (),  # reasons texts shared by many pairs (migration 0014): no user in it
    "algorithm_versions": (),  # one row per version: no user in it
    "feed_cards": ("user_id", "other_user_id"),
}


def _check_covers_every_derived_table() -> None:
    owned = {t.name for tables in schema.DERIVED_OWNERS.values() for t in tables}
    missing = sorted(owned - set(USER_COLUMNS))
    if missing:
        # A new derived table must say which columns name a user, or deactivation leaks.
        raise RuntimeError(f"USER_COLUMNS lacks derived tables {missing}")


_check_covers_every_derived_table()


def pair_likes(conn: sa.Connection, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """``{(a, b): kind}`` of every like, pass or block between the users of ``pairs``, in
    either direction (the key is the row's own direction)."""
    wanted = {(int(a), int(b)) for a, b in pairs}
    wanted |= {(b, a) for a, b in wanted}
    if not wanted:
        return {}
    ids = sorted({u for pair in wanted for u in pair})
    likes = schema.likes
    with translate_errors("read likes of event pairs"):
        rows = conn.execute(
            sa.select(likes.c.user_id, likes.c.target_id, likes.c.kind).where(
                likes.c.user_id.in_(ids), likes.c.target_id.in_(ids)
            )
        ).all()
    return {(int(a), int(b)): str(k) for a, b, k in rows if (int(a), int(b)) in wanted}


def delete_pairs(
    conn: sa.Connection,
    pairs: Iterable[tuple[int, int]],
    *,
    version: str | None = None,
    both_ways: bool = True,
) -> int:
    """Delete the (user, candidate) rows of ``pairs`` (and the reverse rows, ``both_ways``)
    from ``match_scores``, of ``version`` or of every version; rows deleted."""
    wanted = {(int(a), int(b)) for a, b in pairs}
    if both_ways:
        wanted |= {(b, a) for a, b in wanted}
    if not wanted:
        return 0
    ordered = sorted(wanted)
    m = schema.match_scores
    deleted = 0
    with translate_errors("delete excluded pairs from match_scores"):
        for start in range(0, len(ordered), 400):
            chunk = ordered[start : start + 400]
            match = sa.or_(*(sa.and_(m.c.user_id == a, m.c.candidate_id == b) for a, b in chunk))
            query = sa.delete(m).where(match)
            if version is not None:
                query = query.where(m.c.algorithm_version == version)
            deleted += int(conn.execute(query).rowcount or 0)
    return deleted


def inactive_users(conn: sa.Connection, user_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Sorted ids among ``user_ids`` that are inactive now, or have no users row."""
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    if ids.size == 0:
        return ids
    users = schema.users
    with translate_errors("read active flags"):
        active = {
            int(u)
            for u in conn.execute(
                sa.select(users.c.id).where(
                    users.c.id.in_([int(i) for i in ids]), users.c.is_active
                )
            ).scalars()
        }
    return np.asarray([u for u in ids if int(u) not in active], dtype=np.int64)


def forget_users(conn: sa.Connection, user_ids: npt.ArrayLike) -> dict[str, int]:
    """Delete every derived row naming one of ``user_ids``; rows deleted per table."""
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    deleted: dict[str, int] = {}
    if ids.size == 0:
        return deleted
    with translate_errors("delete a deactivated user's derived rows"):
        for table, columns in USER_COLUMNS.items():
            if not columns:  # names no user (e.g. algorithm_versions)
                continue
            where = " OR ".join(bulk.ids_clause(conn, c, "ids") for c in columns)
            result = conn.execute(
                sa.text(f'DELETE FROM "{table}" WHERE {where}'), {"ids": bulk.ids_param(conn, ids)}
            )
            deleted[table] = int(result.rowcount or 0)
    return deleted
