"""match_scores.s_appeal and s_reciprocity: the subscores of the two behaviour signals

The match job scores two signals from the likes job's tables (issue 11, item 2): ``appeal``
(how likely the user is to like the candidate, taste_a · appeal_b) and ``reciprocity`` (how
likely the candidate is to like the user back, taste_b · appeal_a with b's like rate). Each
subscore gets its column and its [0, 1] CHECK, as the six before them.

Rows written before this revision were scored without them: they get 0.5, the neutral
value (the signal unknown), which is what the match job writes for a pair whose users have
no decisions. On PostgreSQL the column is added to the partitioned parent (it reaches every
partition) with that default, which is then dropped, as the models have none. SQLite cannot
add a CHECK in place: match_scores is rebuilt, as in 0004 and 0006.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_OLD = ("quiz", "interests", "rating_quality", "rating_fit", "newness", "proximity")
_NEW = ("appeal", "reciprocity")
_NEUTRAL = "0.5"


def _check(name: str) -> tuple[str, str]:
    return f"ck_match_scores_s_{name}_range", f"s_{name} >= 0 AND s_{name} <= 1"


def _match_scores_sqlite(subscores: tuple[str, ...]) -> None:
    """Rebuild match_scores with exactly ``subscores`` (copying the rows; new ones 0.5)."""
    op.drop_index("ix_match_scores_read", table_name="match_scores")
    op.drop_index("ix_match_scores_reverse", table_name="match_scores")
    op.rename_table("match_scores", "match_scores_old")
    op.create_table(
        "match_scores",
        sa.Column("algorithm_version", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        *(sa.Column(f"s_{n}", sa.Float(), nullable=False) for n in subscores),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_match_scores_score_range")),
        *(sa.CheckConstraint(_check(n)[1], name=op.f(_check(n)[0])) for n in subscores),
        sa.PrimaryKeyConstraint(
            "user_id", "candidate_id", "algorithm_version", name=op.f("pk_match_scores")
        ),
    )
    kept = ("algorithm_version", "user_id", "candidate_id", "score")
    tail = ("reasons", "config_hash", "computed_at")
    target = ", ".join((*kept, *(f"s_{n}" for n in subscores), *tail))
    source = ", ".join((*kept, *(f"s_{n}" if n in _OLD else _NEUTRAL for n in subscores), *tail))
    op.execute(f"INSERT INTO match_scores ({target}) SELECT {source} FROM match_scores_old")
    op.drop_table("match_scores_old")
    op.create_index(
        "ix_match_scores_read", "match_scores", ["user_id", sa.literal_column("score DESC")]
    )
    op.create_index("ix_match_scores_reverse", "match_scores", ["candidate_id"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _match_scores_sqlite((*_OLD, *_NEW))
        return
    for name in _NEW:
        op.add_column(
            "match_scores",
            sa.Column(f"s_{name}", sa.Float(), nullable=False, server_default=_NEUTRAL),
        )
        op.alter_column("match_scores", f"s_{name}", server_default=None)
        check, cond = _check(name)
        op.create_check_constraint(op.f(check), "match_scores", cond)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _match_scores_sqlite(_OLD)
        return
    for name in _NEW:
        op.drop_constraint(op.f(_check(name)[0]), "match_scores", type_="check")
        op.drop_column("match_scores", f"s_{name}")
