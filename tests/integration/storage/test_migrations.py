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


def legacy_scores() -> sa.TableClause:
    """match_scores as it was before 0014 (reasons text, config hash), for older revisions."""
    names = ("algorithm_version", "user_id", "candidate_id", "score")
    names += (*(f"s_{n}" for n in schema.SUBSCORE_COLUMNS), "reasons", "config_hash")
    return sa.table(
        "match_scores",
        *(sa.column(n) for n in names),
        sa.column("computed_at", schema.UTCDateTime()),
    )


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
        reason_id=1,
        computed_at=dt.datetime.now(dt.UTC),
    )
    for bad in (float("nan"), 1.5, -0.1):
        with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
            conn.execute(sa.insert(schema.match_scores).values(score=bad, **row))
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.match_scores).values(score=0.7, **row))


def test_partitioning_keeps_rows_and_gives_each_version_its_partition(pg_db) -> None:
    import datetime as dt

    from jobs.storage import swap

    engine = pg_db.engine
    migrate.downgrade(engine, "0002")
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for version, user in (("v1", 1), ("v1", 2), ("exp-2", 1)):
            conn.execute(
                sa.insert(legacy_scores()).values(
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
    migrate.upgrade(engine, "0010")
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
    assert parts[swap.partition_name("v1")] == "FOR VALUES IN ('v1')"
    assert parts[swap.partition_name("exp-2")] == "FOR VALUES IN ('exp-2')"
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
            **{f"s_{n}": 0.5 for n in SUBSCORES_BEFORE_0013},
            reasons=f'[{{"code": "nearby", "params": {{"km": {candidate}}}}}]',
            config_hash="h",
            computed_at=now,
        )
        for version, user, candidate in (("v1", 1, 2), ("v1", 1, 3), ("v1", 2, 1), ("exp", 1, 2))
    ]
    migrate.downgrade(db.engine, "0010")
    with db.engine.begin() as conn:
        conn.execute(sa.insert(legacy_scores()), rows)

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
    migrate.upgrade(db.engine, "0010")
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
        sa.insert(legacy_scores()),
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
    migrate.upgrade(db.engine, "0010")
    checks = {c["name"] for c in sa.inspect(db.engine).get_check_constraints("users")}
    assert {"ck_users_latitude", "ck_users_seeking_mask", "ck_users_location_pair"} <= checks
    assert rows() == stored
    migrate.downgrade(db.engine, "0005")
    assert schema_snapshot(db.engine) == at_0005
    assert rows() == stored


def test_compact_scores_migration_keeps_what_the_api_reads_both_ways(db) -> None:
    """0014 moves reasons to reason_patterns and scores to float4: the API's read of every
    row is unchanged (reasons text for text, scores to float32), and the downgrade gives
    back the old rows with the version's scoring hash as config_hash."""
    import datetime as dt

    import numpy as np

    from jobs.storage import api, scores, swap

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    texts = [
        "[]",
        '[{"code": "nearby", "params": {"km": 5}, "text": "About 5 km away"}]',
        '[{"code": "shared_interests", "params": {"interests": ["café"]}, '
        '"text": "You both love café"}]',
    ]
    rows = [
        dict(
            algorithm_version=version,
            user_id=user,
            candidate_id=candidate,
            # float32 values as the scorer writes them, and one float64 that is not.
            score=float(np.float32(0.1 * candidate)) if candidate != 4 else 0.123456789012,
            **{f"s_{n}": float(np.float32(0.3)) for n in schema.SUBSCORE_COLUMNS},
            reasons=texts[candidate % 3],
            config_hash="h-old",
            computed_at=now,
        )
        for version, user, candidate in (("v1", 1, 2), ("v1", 1, 3), ("v1", 1, 4), ("exp", 2, 3))
    ]
    migrate.downgrade(db.engine, "0013")
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "postgresql":  # v1 swapped in once, exp never
            name = swap.partition_name("v1")
            conn.exec_driver_sql(
                f"CREATE TABLE \"{name}\" PARTITION OF match_scores FOR VALUES IN ('v1')"
            )
        conn.execute(sa.insert(legacy_scores()), rows)
        conn.execute(
            sa.text(
                "INSERT INTO algorithm_versions (algorithm_version, scoring_hash, "
                "first_written_at, hash_set_at) VALUES ('v1', 'h-v1', :t, :t)"
            ),
            {"t": now},
        )
    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        served = api.suggestions(conn, "v1", 1, 10)
        n_patterns = conn.execute(sa.text("SELECT count(*) FROM reason_patterns")).scalar_one()
        exp = scores.read_rows(conn, "exp")
    assert served["candidate_id"].tolist() == [3, 2, 4]
    assert served["reasons"].tolist() == [texts[0], texts[2], texts[1]]
    # What the scorer wrote (float32 values) reads back exactly on both engines; a float64
    # that no scorer wrote is rounded to float4 by PostgreSQL, kept by SQLite's REAL.
    unrounded = 0.123456789012
    if db.engine.dialect.name == "postgresql":
        unrounded = float(np.float32(unrounded))
    assert served["score"].tolist() == [float(np.float32(0.3)), float(np.float32(0.2)), unrounded]
    assert (served["s_quiz"] == float(np.float32(0.3))).all()
    assert n_patterns == 3
    assert exp["reasons"].tolist() == [texts[0]] and exp["user_id"].tolist() == [2]
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            parts = conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'match_scores'::regclass"
                )
            ).scalars()
            assert swap.partition_name("v1") in set(parts)
    migrate.downgrade(db.engine, "0013")
    with db.engine.connect() as conn:
        back = conn.execute(
            sa.text(
                "SELECT algorithm_version, candidate_id, reasons, config_hash FROM match_scores "
                "ORDER BY 1, 2"
            )
        ).all()
    assert [tuple(r) for r in back] == [
        ("exp", 3, texts[0], ""),
        ("v1", 2, texts[2], "h-v1"),
        ("v1", 3, texts[0], "h-v1"),
        ("v1", 4, texts[1], "h-v1"),
    ]
