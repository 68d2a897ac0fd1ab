"""SQL for ``feed_cards``: the feed job (and the worker's immediate step for a mutual like or a
revived conversation, through :func:`insert_pair_cards`) writes them.

``reason`` is JSON of one shape for every cause, ``{"cause": C, "reasons": [R, ...]}``, each
``R`` a reason object with at least ``code`` and ``text`` (a high-score card's are the
suggestion's own reasons, as stored in ``match_scores.reasons``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import numpy as np
import sqlalchemy as sa

from jobs.storage import schema
from jobs.storage.engine import translate_errors

_MUTUAL_SQL = """
INSERT INTO feed_cards (user_id, other_user_id, kind, cause, algorithm_version, score, reason,
                        created_at)
SELECT a.user_id, a.target_id, 'match', 'mutual_match', CAST(:version AS VARCHAR(64)), NULL,
       :mutual_reason, :now
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
       CAST(:high_prefix AS TEXT) || p.reasons || CAST(:high_suffix AS TEXT), :now
FROM match_scores m JOIN reason_patterns p ON p.id = m.reason_id
WHERE m.algorithm_version = :version AND m.score >= :threshold {scope}
  AND NOT EXISTS (SELECT 1 FROM likes l WHERE l.user_id = m.user_id
                  AND l.target_id = m.candidate_id)
  AND NOT EXISTS (
    SELECT 1 FROM feed_cards f
    WHERE f.user_id = m.user_id AND f.other_user_id = m.candidate_id AND f.kind = 'match'
      AND f.cause = 'high_score' AND f.algorithm_version = m.algorithm_version)
"""


# cause -> the reason a card of that cause carries (high_score: the suggestion's own)
PAIR_REASONS = {
    "mutual_match": {"code": "mutual_like", "text": "You liked each other"},
    "conversation_revived": {"code": "conversation_revived", "text": "Your conversation is back"},
}


def reason_json(cause: str, reasons: list[dict[str, object]]) -> str:
    """The ``reason`` text of a card: ``{"cause": cause, "reasons": reasons}``."""
    return json.dumps({"cause": cause, "reasons": reasons}, ensure_ascii=False)


def insert_new_cards(
    conn: sa.Connection,
    *,
    version: str,
    threshold: float,
    now: dt.datetime,
    user_ids: np.ndarray | None,
) -> dict[str, int]:
    """Add the cards that do not exist yet; existing cards are never duplicated or changed."""
    params = {
        "version": version,
        "threshold": threshold,
        "now": _bind_time(conn, now),
        "mutual_reason": reason_json("mutual_match", [PAIR_REASONS["mutual_match"]]),
        # the suggestion's own reasons list, wrapped as {"cause": "high_score", "reasons": …}
        "high_prefix": '{"cause": "high_score", "reasons": ',
        "high_suffix": "}",
    }
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


def mutual_likes(conn: sa.Connection, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs among ``pairs`` (a, b) where a likes b and b likes a, as (min, max)."""
    wanted = sorted({(min(a, b), max(a, b)) for a, b in pairs})
    if not wanted:
        return []
    likes = schema.likes
    ids = sorted({u for pair in wanted for u in pair})
    with translate_errors("read mutual likes"):
        rows = conn.execute(
            sa.select(likes.c.user_id, likes.c.target_id).where(
                likes.c.kind == "like", likes.c.user_id.in_(ids), likes.c.target_id.in_(ids)
            )
        ).all()
    liked = {(int(a), int(b)) for a, b in rows}
    return [(a, b) for a, b in wanted if (a, b) in liked and (b, a) in liked]


def insert_pair_cards(
    conn: sa.Connection,
    pairs: Iterable[tuple[int, int]],
    *,
    cause: str,
    version: str,
    now: dt.datetime,
) -> int:
    """A ``match`` card of ``cause`` for both users of each pair; existing ones are kept.

    Returns the cards created. Idempotent: a pair already carded for this cause and version
    gets nothing new, so a retried or duplicated event never duplicates a card.
    """
    if cause not in PAIR_REASONS:
        raise ValueError(f"cause must be one of {sorted(PAIR_REASONS)}; got {cause!r}")
    cards = schema.feed_cards
    wanted = sorted({(int(a), int(b)) for x, y in pairs for a, b in ((x, y), (y, x)) if a != b})
    if not wanted:
        return 0
    ids = sorted({u for pair in wanted for u in pair})
    reason = reason_json(cause, [PAIR_REASONS[cause]])
    with translate_errors(f"insert {cause} feed cards"):
        existing = {
            (int(a), int(b))
            for a, b in conn.execute(
                sa.select(cards.c.user_id, cards.c.other_user_id).where(
                    cards.c.kind == "match",
                    cards.c.cause == cause,
                    cards.c.algorithm_version == version,
                    cards.c.user_id.in_(ids),
                    cards.c.other_user_id.in_(ids),
                )
            )
        }
        rows = [
            {
                "user_id": a,
                "other_user_id": b,
                "kind": "match",
                "cause": cause,
                "algorithm_version": version,
                "score": None,
                "reason": reason,
                "created_at": now,
            }
            for a, b in wanted
            if (a, b) not in existing
        ]
        if rows:
            conn.execute(sa.insert(cards), rows)
    return len(rows)
