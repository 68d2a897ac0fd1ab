"""SQL for ``feed_cards``: the feed job is its only writer."""

from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

from jobs.storage import schema
from jobs.storage.engine import translate_errors

_MUTUAL_SQL = """
INSERT INTO feed_cards (user_id, other_user_id, kind, cause, algorithm_version, score, reason,
                        created_at)
SELECT a.user_id, a.target_id, 'match', 'mutual_match', CAST(:version AS VARCHAR(64)), NULL,
       'You liked each other', :now
FROM likes a
JOIN likes b ON b.user_id = a.target_id AND b.target_id = a.user_id AND b.kind = 'like'
WHERE a.kind = 'like' {scope}
  AND NOT EXISTS (
    SELECT 1 FROM feed_cards f
    WHERE f.user_id = a.user_id AND f.other_user_id = a.target_id AND f.kind = 'match'
      AND f.cause = 'mutual_match' AND f.algorithm_version = :version)
"""

_HIGH_SCORE_SQL = """
INSERT INTO feed_cards (user_id, other_user_id, kind, cause, algorithm_version, score, reason,
                        created_at)
SELECT m.user_id, m.candidate_id, 'match', 'high_score', m.algorithm_version, m.score,
       m.reasons, :now
FROM match_scores m
WHERE m.algorithm_version = :version AND m.score >= :threshold {scope}
  AND NOT EXISTS (SELECT 1 FROM likes l WHERE l.user_id = m.user_id
                  AND l.target_id = m.candidate_id)
  AND NOT EXISTS (
    SELECT 1 FROM feed_cards f
    WHERE f.user_id = m.user_id AND f.other_user_id = m.candidate_id AND f.kind = 'match'
      AND f.cause = 'high_score' AND f.algorithm_version = m.algorithm_version)
"""


def insert_new_cards(
    conn: sa.Connection,
    *,
    version: str,
    threshold: float,
    now: dt.datetime,
    user_ids: np.ndarray | None,
) -> dict[str, int]:
    """Add the cards that do not exist yet; existing cards are never duplicated or changed."""
    params = {"version": version, "threshold": threshold, "now": _bind_time(conn, now)}
    scope_a = scope_m = ""
    if user_ids is not None:
        ids = ", ".join(str(int(u)) for u in user_ids)
        scope_a = f"AND a.user_id IN ({ids})"
        scope_m = f"AND m.user_id IN ({ids})"
    with translate_errors("insert of feed cards"):
        mutual = conn.execute(sa.text(_MUTUAL_SQL.format(scope=scope_a)), params).rowcount
        high = conn.execute(sa.text(_HIGH_SCORE_SQL.format(scope=scope_m)), params).rowcount
    return {"mutual_match": int(mutual), "high_score": int(high)}


def _bind_time(conn: sa.Connection, now: dt.datetime) -> object:
    # Raw text SQL bypasses the column type: store what UTCDateTime would store.
    return schema.UTCDateTime().process_bind_param(now, conn.dialect)
