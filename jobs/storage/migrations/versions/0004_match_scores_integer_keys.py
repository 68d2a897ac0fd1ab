"""match_scores keys lead with integers; the read and reverse indexes drop the version

The nightly builds match_scores' primary key and two indexes on 18M fresh rows. With
``algorithm_version`` (text, one value per partition) leading every key, each comparison
of the sorts went through the collation first: the three builds took 30 s; with integer
keys first and the version last in the primary key (a partitioned table's key must hold
its partition key) they take 14 s. Within a version's partition the version column is
constant, so the read index (user_id, score DESC) and the reverse index (candidate_id)
serve the same queries; on SQLite the version is checked on the few rows of one user.

Trade-offs: reads by version alone (status coverage, stale users, the SQLite nightly's
departed users, the default partition's cleanup at a version's first swap) no longer
have an index and scan the version's partition, or the SQLite table; all of them read or
touch most of those rows anyway. On PostgreSQL the upgrade rebuilds the key and both
indexes of every partition under an ACCESS EXCLUSIVE lock: API reads wait for it
(≈ 20 s per 18M rows here), so run it outside the hours the app serves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD = {
    "pk": ("algorithm_version", "user_id", "candidate_id"),
    "read": ("algorithm_version", "user_id", "score DESC"),
    "reverse": ("algorithm_version", "candidate_id"),
}
NEW = {
    "pk": ("user_id", "candidate_id", "algorithm_version"),
    "read": ("user_id", "score DESC"),
    "reverse": ("candidate_id",),
}


def _postgresql(keys: dict[str, tuple[str, ...]]) -> None:
    # On the partitioned table: each statement reaches every partition.
    op.execute("ALTER TABLE match_scores DROP CONSTRAINT pk_match_scores")
    op.execute("DROP INDEX ix_match_scores_read")
    op.execute("DROP INDEX ix_match_scores_reverse")
    op.execute(
        "ALTER TABLE match_scores ADD CONSTRAINT pk_match_scores "
        f"PRIMARY KEY ({', '.join(keys['pk'])})"
    )
    op.execute(f"CREATE INDEX ix_match_scores_read ON match_scores ({', '.join(keys['read'])})")
    op.execute(
        f"CREATE INDEX ix_match_scores_reverse ON match_scores ({', '.join(keys['reverse'])})"
    )


def _sqlite(keys: dict[str, tuple[str, ...]]) -> None:
    # SQLite cannot change a primary key in place: rebuild the table (columns as in 0001).
    op.drop_index("ix_match_scores_read", table_name="match_scores")
    op.drop_index("ix_match_scores_reverse", table_name="match_scores")
    op.rename_table("match_scores", "match_scores_old")
    op.create_table(
        "match_scores",
        sa.Column("algorithm_version", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("s_quiz", sa.Float(), nullable=False),
        sa.Column("s_interests", sa.Float(), nullable=False),
        sa.Column("s_rating_quality", sa.Float(), nullable=False),
        sa.Column("s_rating_fit", sa.Float(), nullable=False),
        sa.Column("s_newness", sa.Float(), nullable=False),
        sa.Column("s_proximity", sa.Float(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_match_scores_score_range")),
        sa.PrimaryKeyConstraint(*keys["pk"], name=op.f("pk_match_scores")),
    )
    op.execute("INSERT INTO match_scores SELECT * FROM match_scores_old")
    op.drop_table("match_scores_old")
    for name in ("read", "reverse"):
        columns = [sa.literal_column(c) if " " in c else c for c in keys[name]]
        op.create_index(f"ix_match_scores_{name}", "match_scores", columns, unique=False)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql(NEW)
    else:
        _sqlite(NEW)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql(OLD)
    else:
        _sqlite(OLD)
