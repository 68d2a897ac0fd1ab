"""CHECK constraints on the values the app writes and on match_scores' subscores

Users with impossible filter fields (a latitude of 95, an infinite longitude, a seeking
mask of 0, a negative distance limit) were scored as if they had no location or no limit;
the match job now skips them (issue 9, item 6), and from this revision the database refuses
them at the door: gender 0..2, seeking_mask 1..7 (no default: "seeks nobody" is not a
profile), age_min/age_max 18..120 with age_min <= age_max, latitude in [-90, 90] and
longitude in [-180, 180] (both or neither), max_distance_km finite and >= 0, quiz answer
and rating values finite, and every match_scores subscore in [0, 1]. NULL stays allowed
where the column allows it (missing data). ``x BETWEEN -1e308 AND 1e308`` is the portable
"finite": ±inf lies outside, and NaN is above every number on PostgreSQL (SQLite stores
NaN as NULL).

Rows already violating a constraint are never deleted or changed: the upgrade counts them
per constraint first and, if any, stops before altering anything with an error naming the
table, the constraint, the count and a few keys, so an operator can fix the data and rerun.
On PostgreSQL, match_scores is partitioned: a CHECK added to the parent reaches every
partition (validated by a scan of each) and every partition created later, and the
nightly's stage tables copy it (``LIKE match_scores INCLUDING CONSTRAINTS``), as ATTACH
PARTITION requires. SQLite cannot add a constraint in place: the tables are rebuilt (batch
mode; match_scores explicitly, as in 0004, to keep its descending read index).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from jobs.errors import InputDataError

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

logger = logging.getLogger("jobs.storage.migrations")

_FINITE = "BETWEEN -1e308 AND 1e308"
_SUBSCORES = ("quiz", "interests", "rating_quality", "rating_fit", "newness", "proximity")

# table -> (key columns shown in the report, {constraint name: condition})
CHECKS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "users": (
        ("id",),
        {
            "ck_users_gender": "gender BETWEEN 0 AND 2",
            "ck_users_seeking_mask": "seeking_mask BETWEEN 1 AND 7",
            "ck_users_age_min": "age_min BETWEEN 18 AND 120",
            "ck_users_age_max": "age_max BETWEEN 18 AND 120",
            "ck_users_age_range": "age_min <= age_max",
            "ck_users_latitude": "latitude BETWEEN -90 AND 90",
            "ck_users_longitude": "longitude BETWEEN -180 AND 180",
            "ck_users_location_pair": "(latitude IS NULL) = (longitude IS NULL)",
            "ck_users_max_distance_km": "max_distance_km >= 0 AND max_distance_km <= 1e308",
        },
    ),
    "quiz_answers": (
        ("user_id", "question_id"),
        {"ck_quiz_answers_value_finite": f"value {_FINITE}"},
    ),
    "ratings": (
        ("rater_id", "rated_id", "dimension_id"),
        {"ck_ratings_value_finite": f"value {_FINITE}"},
    ),
    "match_scores": (
        ("algorithm_version", "user_id", "candidate_id"),
        {f"ck_match_scores_s_{n}_range": f"s_{n} >= 0 AND s_{n} <= 1" for n in _SUBSCORES},
    ),
}
SAMPLE_KEYS = 5


def violations(bind: sa.Connection) -> list[str]:
    """One line per violated constraint: table, constraint, count of rows and a few keys."""
    lines = []
    for table, (keys, checks) in CHECKS.items():
        # One scan per table: a count per constraint (a NULL condition passes a CHECK).
        sums = ", ".join(
            f"SUM(CASE WHEN NOT ({cond}) THEN 1 ELSE 0 END)" for cond in checks.values()
        )
        counts = bind.execute(sa.text(f"SELECT {sums} FROM {table}")).one()
        for (name, cond), count in zip(checks.items(), counts, strict=True):
            if not count:
                continue
            key_sql = ", ".join(keys)
            sample = bind.execute(
                sa.text(
                    f"SELECT {key_sql} FROM {table} WHERE NOT ({cond}) "
                    f"ORDER BY {key_sql} LIMIT {SAMPLE_KEYS}"
                )
            ).all()
            shown = ", ".join(
                str(row[0]) if len(row) == 1 else "(" + ", ".join(map(str, row)) + ")"
                for row in sample
            )
            lines.append(
                f"{table}: {count} rows violate {name} ({cond}); {', '.join(keys)} e.g. {shown}"
            )
    return lines


def _refuse_violations() -> None:
    lines = violations(op.get_bind())
    if not lines:
        return
    for line in lines:
        logger.error(line, extra={"action": "db.migrate.violations", "revision": revision})
    raise InputDataError(
        f"migration {revision} stopped before changing anything: rows violate the new "
        "constraints. Fix or delete them, then rerun `matchjobs db upgrade`:\n" + "\n".join(lines)
    )


def _match_scores_sqlite(with_subscore_checks: bool) -> None:
    # Rebuilt as in 0004 (batch mode would reflect the read index without its DESC).
    op.drop_index("ix_match_scores_read", table_name="match_scores")
    op.drop_index("ix_match_scores_reverse", table_name="match_scores")
    op.rename_table("match_scores", "match_scores_old")
    checks = CHECKS["match_scores"][1] if with_subscore_checks else {}
    op.create_table(
        "match_scores",
        sa.Column("algorithm_version", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        *(sa.Column(f"s_{n}", sa.Float(), nullable=False) for n in _SUBSCORES),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_match_scores_score_range")),
        *(sa.CheckConstraint(cond, name=op.f(name)) for name, cond in checks.items()),
        sa.PrimaryKeyConstraint(
            "user_id", "candidate_id", "algorithm_version", name=op.f("pk_match_scores")
        ),
    )
    op.execute("INSERT INTO match_scores SELECT * FROM match_scores_old")
    op.drop_table("match_scores_old")
    op.create_index(
        "ix_match_scores_read", "match_scores", ["user_id", sa.literal_column("score DESC")]
    )
    op.create_index("ix_match_scores_reverse", "match_scores", ["candidate_id"])


def _alter(add: bool) -> None:
    """Add (upgrade) or drop (downgrade) every check, and drop or restore the old default."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, (_, checks) in CHECKS.items():
        if table == "match_scores" and sqlite:
            _match_scores_sqlite(with_subscore_checks=add)
            continue
        with op.batch_alter_table(table) as batch_op:
            if table == "users":
                batch_op.alter_column(
                    "seeking_mask",
                    existing_type=sa.SmallInteger(),
                    existing_nullable=False,
                    server_default=None if add else "0",
                )
            for name, cond in checks.items():
                if add:
                    batch_op.create_check_constraint(op.f(name), cond)
                else:
                    batch_op.drop_constraint(op.f(name), type_="check")


def upgrade() -> None:
    _refuse_violations()
    _alter(add=True)


def downgrade() -> None:
    _alter(add=False)
