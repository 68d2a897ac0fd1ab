"""Migrations: a fresh database, a step-by-step upgraded one and the models agree."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from jobs.storage import migrate, schema

# match_scores' subscores before 0013 added s_appeal and s_reciprocity: rows written at an
# older revision have only these.
SUBSCORES_BEFORE_0013 = (
    "quiz",
    "interests",
    "rating_quality",
    "rating_fit",
    "newness",
    "proximity",
)


def schema_snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), keys, indexes and checks, comparable."""
    inspector = sa.inspect(engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        snapshot[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    str(sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items())),
                )
                for i in inspector.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "checks": sorted(c["name"] for c in inspector.get_check_constraints(table)),
            "fks": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return snapshot


def test_migrated_schema_matches_models(db) -> None:
    with db.engine.connect() as conn:
        opts = {
            "compare_type": True,
            "include_name": lambda name, type_, _parent: (
                not (type_ == "table" and name.startswith(schema.PARTITION_PREFIX))
            ),
        }
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), schema.metadata)
    assert diff == []


def test_upgrade_step_by_step_equals_fresh(db) -> None:
    fresh = schema_snapshot(db.engine)
    assert "match_scores" in fresh and "job_runs" in fresh
    assert migrate.downgrade(db.engine, "base") is None
    assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
    script = ScriptDirectory.from_config(migrate.alembic_config())
    for revision in [rev.revision for rev in reversed(list(script.walk_revisions()))]:
        assert migrate.upgrade(db.engine, revision) == revision
    assert schema_snapshot(db.engine) == fresh
    assert migrate.current_revision(db.engine) == migrate.head_revision()


def test_score_constraint_refuses_nan_and_out_of_range(db) -> None:
    import datetime as dt

    import pytest

    row = dict(
        algorithm_version="v1",
        user_id=1,
        candidate_id=2,
        **{f"s_{n}": 0.5 for n in schema.SUBSCORE_COLUMNS},
        reasons="[]",
        config_hash="x",
        computed_at=dt.datetime.now(dt.UTC),
    )
    for bad in (float("nan"), 1.5, -0.1):
        with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
            conn.execute(sa.insert(schema.match_scores).values(score=bad, **row))
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.match_scores).values(score=0.7, **row))


def test_partitioning_keeps_rows_and_gives_each_version_its_partition(pg_db) -> None:
    import datetime as dt

    from jobs.storage import scores

    engine = pg_db.engine
    migrate.downgrade(engine, "0002")
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for version, user in (("v1", 1), ("v1", 2), ("exp-2", 1)):
            conn.execute(
                sa.insert(schema.match_scores).values(
                    algorithm_version=version,
                    user_id=user,
                    candidate_id=9,
                    score=0.5,
                    **{f"s_{n}": 0.5 for n in SUBSCORES_BEFORE_0013},
                    reasons="[]",
                    config_hash="h",
                    computed_at=now,
                )
            )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        parts = dict(
            conn.execute(
                sa.text(
                    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'match_scores'::regclass"
                )
            ).all()
        )
        per_version = dict(
            conn.execute(
                sa.text("SELECT algorithm_version, count(*) FROM match_scores GROUP BY 1")
            ).all()
        )
        in_default = conn.execute(sa.text("SELECT count(*) FROM match_scores_default")).scalar()
    assert parts[scores.partition_name("v1")] == "FOR VALUES IN ('v1')"
    assert parts[scores.partition_name("exp-2")] == "FOR VALUES IN ('exp-2')"
    assert parts["match_scores_default"] == "DEFAULT"
    assert per_version == {"v1": 2, "exp-2": 1} and in_default == 0


def test_integer_keys_migration_keeps_rows_both_ways(db) -> None:
    # 0004 rebuilds the SQLite table and re-keys every PostgreSQL partition: rows survive
    # the downgrade to 0003 and the upgrade back, and the key columns follow the revision.
    import datetime as dt

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rows = [
        dict(
            algorithm_version=version,
            user_id=user,
            candidate_id=candidate,
            score=0.25 * candidate,
            **{f"s_{n}": 0.5 for n in schema.SUBSCORE_COLUMNS},
            reasons=f'[{{"code": "nearby", "params": {{"km": {candidate}}}}}]',
            config_hash="h",
            computed_at=now,
        )
        for version, user, candidate in (("v1", 1, 2), ("v1", 1, 3), ("v1", 2, 1), ("exp", 1, 2))
    ]
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.match_scores), rows)

    def stored() -> list[tuple[Any, ...]]:
        with db.engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    sa.text(
                        "SELECT algorithm_version, user_id, candidate_id, score, reasons "
                        "FROM match_scores ORDER BY 1, 2, 3"
                    )
                )
            ]

    def key() -> list[str]:
        return sa.inspect(db.engine).get_pk_constraint("match_scores")["constrained_columns"]

    before = stored()
    assert len(before) == 4
    assert key() == ["user_id", "candidate_id", "algorithm_version"]
    migrate.downgrade(db.engine, "0003")
    assert stored() == before
    assert key() == ["algorithm_version", "user_id", "candidate_id"]
    migrate.upgrade(db.engine)
    assert stored() == before
    assert key() == ["user_id", "candidate_id", "algorithm_version"]


def _source_rows(conn: sa.Connection, users: list[dict[str, Any]]) -> None:
    import datetime as dt

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    base = dict(
        gender=0,
        seeking_mask=2,
        age_min=18,
        age_max=99,
        max_distance_km=50.0,
        latitude=52.5,
        longitude=13.4,
        created_at=now,
    )
    conn.execute(sa.insert(schema.users), [{**base, **u} for u in users])
    conn.execute(
        sa.insert(schema.quiz_answers),
        [
            dict(user_id=1, question_id=1, value=3.0, answered_at=now),
            dict(user_id=2, question_id=1, value=float("inf"), answered_at=now),
        ],
    )
    conn.execute(
        sa.insert(schema.match_scores),
        {
            "algorithm_version": "v1",
            "user_id": 1,
            "candidate_id": 2,
            "score": 0.5,
            **{f"s_{n}": 0.5 for n in SUBSCORES_BEFORE_0013},
            "s_proximity": 1.5,
            "reasons": "[]",
            "config_hash": "h",
            "computed_at": now,
        },
    )


def test_constraints_migration_reports_violating_rows_and_changes_nothing(db, caplog) -> None:
    """0006 never deletes bad rows: it names table, constraint, count and keys, and stops."""
    import logging

    import pytest

    from jobs.errors import InputDataError

    migrate.downgrade(db.engine, "0005")
    with db.engine.begin() as conn:
        _source_rows(
            conn,
            [
                {"id": 1},
                {"id": 2, "latitude": 95.0},
                {"id": 3, "latitude": -91.0, "seeking_mask": 0},
                {"id": 4, "max_distance_km": -1.0, "age_min": 50, "age_max": 40},
            ],
        )
    before = schema_snapshot(db.engine)
    with pytest.raises(InputDataError) as info, caplog.at_level(logging.ERROR):
        migrate.upgrade(db.engine)
    message = str(info.value)
    expected = [
        "users: 2 rows violate ck_users_latitude (latitude BETWEEN -90 AND 90); id e.g. 2, 3",
        "users: 1 rows violate ck_users_seeking_mask (seeking_mask BETWEEN 1 AND 7); id e.g. 3",
        "users: 1 rows violate ck_users_age_range (age_min <= age_max); id e.g. 4",
        "users: 1 rows violate ck_users_max_distance_km",
        "quiz_answers: 1 rows violate ck_quiz_answers_value_finite",
        "user_id, question_id e.g. (2, 1)",
        "match_scores: 1 rows violate ck_match_scores_s_proximity_range",
        "algorithm_version, user_id, candidate_id e.g. (v1, 1, 2)",
    ]
    for part in expected:
        assert part in message
    assert "ck_users_gender" not in message and "ck_ratings" not in message
    assert "matchjobs db upgrade" in message
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(line.startswith("users: 2 rows violate ck_users_latitude") for line in logged)
    assert migrate.current_revision(db.engine) == "0005"
    assert schema_snapshot(db.engine) == before
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 4
    # Once the operator fixes the rows, the same upgrade goes through.
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET latitude = 52.5, seeking_mask = 2, age_max = 60"))
        conn.execute(sa.text("UPDATE users SET max_distance_km = NULL WHERE id = 4"))
        conn.execute(sa.text("UPDATE quiz_answers SET value = NULL WHERE user_id = 2"))
        conn.execute(sa.text("UPDATE match_scores SET s_proximity = 1"))
    assert migrate.upgrade(db.engine) == migrate.head_revision()


def test_constraints_migration_round_trips_a_clean_database(db) -> None:
    migrate.downgrade(db.engine, "0005")
    at_0005 = schema_snapshot(db.engine)
    with db.engine.begin() as conn:
        _source_rows(conn, [{"id": 1}, {"id": 2, "latitude": None, "longitude": None}])
        conn.execute(sa.text("UPDATE quiz_answers SET value = 4 WHERE user_id = 2"))
        conn.execute(sa.text("UPDATE match_scores SET s_proximity = 1"))

    # match_scores' columns as of 0005 (later revisions add subscores).
    scores_columns = ", ".join(
        (
            "algorithm_version",
            "user_id",
            "candidate_id",
            "score",
            *(f"s_{n}" for n in SUBSCORES_BEFORE_0013),
            "reasons",
            "config_hash",
            "computed_at",
        )
    )

    def rows() -> list[Any]:
        with db.engine.connect() as conn:
            return [
                conn.execute(sa.text(f"SELECT {columns} FROM {t} ORDER BY 1, 2, 3")).all()
                for t, columns in (
                    ("users", "*"),
                    ("quiz_answers", "*"),
                    ("match_scores", scores_columns),
                )
            ]

    stored = rows()
    migrate.upgrade(db.engine)
    checks = {c["name"] for c in sa.inspect(db.engine).get_check_constraints("users")}
    assert {"ck_users_latitude", "ck_users_seeking_mask", "ck_users_location_pair"} <= checks
    assert rows() == stored
    migrate.downgrade(db.engine, "0005")
    assert schema_snapshot(db.engine) == at_0005
    assert rows() == stored
