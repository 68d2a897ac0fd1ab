"""The database refuses the values no job could honour (migration 0006), on both engines.

Regression (issue 9, item 6): a latitude of 95, an infinite longitude, a seeking mask of 0,
a negative distance limit, an infinite answer or rating and a subscore above 1 were all
accepted by the schema; the jobs then had to guess what they meant.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from jobs.storage import population as population_store
from jobs.storage import schema

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NAN, INF = math.nan, math.inf

USER = {
    "id": 1,
    "birth_date": dt.date(1995, 6, 1),
    "gender": 0,
    "seeking_mask": 2,
    "age_min": 25,
    "age_max": 40,
    "max_distance_km": 50.0,
    "latitude": 52.52,
    "longitude": 13.40,
    "created_at": NOW,
}
ANSWER = {"user_id": 1, "question_id": 1, "value": 3.0, "answered_at": NOW}
RATING = {"rater_id": 1, "rated_id": 2, "dimension_id": 1, "value": 7.0, "created_at": NOW}
SCORE = {
    "algorithm_version": "v1",
    "user_id": 1,
    "candidate_id": 2,
    "score": 0.5,
    **{f"s_{n}": 0.5 for n in schema.SUBSCORE_COLUMNS},
    "reason_id": 1,
    "computed_at": NOW,
}
BASE = {"users": USER, "quiz_answers": ANSWER, "ratings": RATING, "match_scores": SCORE}

# (table, changed columns); each is refused on both engines.
GARBAGE: list[tuple[str, dict[str, Any]]] = [
    ("users", {"gender": 3}),
    ("users", {"gender": -1}),
    ("users", {"seeking_mask": 0}),
    ("users", {"seeking_mask": 8}),
    ("users", {"age_min": 17}),
    ("users", {"age_max": 121}),
    ("users", {"age_min": 41, "age_max": 40}),
    ("users", {"latitude": 90.5}),
    ("users", {"latitude": -INF}),
    ("users", {"latitude": NAN}),  # PostgreSQL: NaN; SQLite: NULL beside a longitude
    ("users", {"longitude": 180.5}),
    ("users", {"longitude": INF}),
    ("users", {"latitude": None}),
    ("users", {"max_distance_km": -1.0}),
    ("users", {"max_distance_km": INF}),
    ("quiz_answers", {"value": INF}),
    ("quiz_answers", {"value": -INF}),
    ("ratings", {"value": INF}),
    ("ratings", {"value": -INF}),
    *(
        ("match_scores", {f"s_{n}": bad})
        for n in schema.SUBSCORE_COLUMNS
        for bad in (1.5, -0.1, NAN, INF)
    ),
]
# SQLite stores NaN as NULL, which these nullable columns allow (missing data); PostgreSQL
# stores NaN and refuses it.
NAN_IS_NULL_ON_SQLITE: list[tuple[str, str]] = [
    ("users", "max_distance_km"),
    ("quiz_answers", "value"),
    ("ratings", "value"),
]


def insert(db: Any, table: str, **changes: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.metadata.tables[table]).values({**BASE[table], **changes}))


@pytest.mark.parametrize(("table", "changes"), GARBAGE, ids=[f"{t}-{c}" for t, c in GARBAGE])
def test_each_kind_of_garbage_is_refused(db: Any, table: str, changes: dict[str, Any]) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        insert(db, table, **changes)
    insert(db, table)  # the same row with sane values goes in


def test_valid_edges_and_missing_data_are_accepted(db: Any) -> None:
    rows = [
        {"id": 2, "gender": 2, "seeking_mask": 7, "age_min": 18, "age_max": 120},
        {"id": 3, "gender": None, "seeking_mask": 1, "age_min": 30, "age_max": 30},
        {"id": 4, "latitude": 90.0, "longitude": -180.0, "max_distance_km": 0.0},
        {"id": 5, "latitude": None, "longitude": None, "max_distance_km": None},
    ]
    for row in rows:
        insert(db, "users", **row)
    insert(db, "quiz_answers", value=None)
    insert(db, "ratings", value=None)
    insert(db, "match_scores", score=1.0, **{f"s_{n}": 0.0 for n in schema.SUBSCORE_COLUMNS})


def test_seeking_mask_has_no_default_any_more(db: Any) -> None:
    user = {k: v for k, v in USER.items() if k != "seeking_mask"}
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.insert(schema.users).values(user))


@pytest.mark.parametrize(("table", "column"), NAN_IS_NULL_ON_SQLITE)
def test_nan_is_refused_on_postgres_and_null_on_sqlite(db: Any, table: str, column: str) -> None:
    if db.is_postgres:
        with pytest.raises(sa.exc.IntegrityError):
            insert(db, table, **{column: NAN})
        return
    insert(db, table, **{column: NAN})
    with db.engine.connect() as conn:
        stored = conn.execute(sa.select(schema.metadata.tables[table].c[column])).scalar_one()
    assert stored is None


def test_stage_tables_and_partitions_carry_the_subscore_checks(pg_db: Any) -> None:
    """ATTACH PARTITION needs the stage to hold the parent's checks; LIKE … INCLUDING
    CONSTRAINTS copies them, so a version's partition refuses a bad subscore too."""
    import pandas as pd

    from jobs.storage import scores, swap

    frame = pd.DataFrame(
        {
            "user_id": [1],
            "candidate_id": [2],
            "score": [0.5],
            **{c: [0.5] for c in scores.SUBSCORE_COLUMNS},
            "reasons": ["[]"],
        }
    )
    stage = swap.stage_name(1)
    with pg_db.engine.begin() as conn:
        swap.create_stage(conn, stage, "v1")
        stage_checks = _checks(conn, stage)
        swap.write_stage_shard(
            conn, stage, [1], frame, version="v1", computed_at=NOW, rewrite=False
        )
        nobody = population_store.filter_snapshot(conn, np.empty(0, dtype=np.int64))
        swap.swap_in_stage(conn, stage, "v1", nobody, nobody.user_ids)
        partition_checks = _checks(conn, swap.partition_name("v1"))
    wanted = {f"ck_match_scores_s_{n}_range" for n in schema.SUBSCORE_COLUMNS}
    assert wanted | {"ck_match_scores_score_range"} <= stage_checks
    assert wanted <= partition_checks
    with pytest.raises(sa.exc.IntegrityError), pg_db.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.match_scores).values({**SCORE, "candidate_id": 3, "s_newness": 2.0})
        )


def _checks(conn: sa.Connection, table: str) -> set[str]:
    return set(
        conn.execute(
            sa.text(
                "SELECT conname FROM pg_constraint WHERE contype = 'c' "
                "AND conrelid = CAST(:t AS regclass)"
            ),
            {"t": f'"{table}"'},
        ).scalars()
    )
