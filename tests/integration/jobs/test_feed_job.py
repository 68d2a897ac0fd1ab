"""Feed job: cards for mutual likes and high scores, once each, never for someone already liked."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from jobs import feed, runner
from jobs.context import Scope
from jobs.storage import bulk, schema
from jobs.storage import scores as score_store

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def seed_rows(db, version: str) -> None:
    likes = pd.DataFrame(
        {
            "user_id": [1, 2, 1, 3],
            "target_id": [2, 1, 3, 4],
            "kind": ["like", "like", "pass", "like"],
            "created_at": pd.Series([T0] * 4, dtype="datetime64[us, UTC]"),
        }
    )
    scores = pd.DataFrame(
        {
            "algorithm_version": version,
            "user_id": [3, 3, 4, 5],
            "candidate_id": [5, 4, 5, 3],
            "score": [0.9, 0.95, 0.5, 0.86],
            **{f"s_{n}": 0.5 for n in schema.SUBSCORE_COLUMNS},
            "reasons": '[{"code": "quiz", "text": "Your quiz answers line up closely"}]',
        }
    )
    with db.engine.begin() as conn:
        bulk.insert_frame(conn, schema.likes, likes)
        score_store.insert_rows(
            conn, scores[list(score_store.FRAME_COLUMNS)], version=version, computed_at=T0
        )


def cards(db) -> list[tuple[int, int, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                schema.feed_cards.c.user_id,
                schema.feed_cards.c.other_user_id,
                schema.feed_cards.c.cause,
            ).order_by(schema.feed_cards.c.id)
        )
        return sorted(tuple(r) for r in rows)


def test_cards_for_mutual_likes_and_high_scores_once(db, default_config) -> None:
    seed_rows(db, default_config.algorithm_version)
    _, result = runner.execute(
        "feed",
        feed.run,
        engine=db.engine,
        database_url=db.url,
        config=default_config,
        scope=Scope.all(),
    )
    expected = [
        (1, 2, "mutual_match"),
        (2, 1, "mutual_match"),
        # 3 -> 4 scores 0.95 but 3 already liked 4: no card; 4 -> 5 is below 0.85
        (3, 5, "high_score"),
        (5, 3, "high_score"),
    ]
    assert cards(db) == expected
    assert result.rows_written == 4
    _, again = runner.execute(
        "feed",
        feed.run,
        engine=db.engine,
        database_url=db.url,
        config=default_config,
        scope=Scope.all(),
    )
    assert again.rows_written == 0
    assert cards(db) == expected


def test_user_scope_only_touches_that_users_feed(db, default_config) -> None:
    seed_rows(db, default_config.algorithm_version)
    runner.execute(
        "feed",
        feed.run,
        engine=db.engine,
        database_url=db.url,
        config=default_config,
        scope=Scope.users(5),
    )
    assert cards(db) == [(5, 3, "high_score")]
