"""user_like_behaviour and user_taste_vectors: the likes job's tables

The likes job (``jobs.signals.likes``) derives from likes and passes, per user, the shrunk
like rates given and received with their counts (``user_like_behaviour``), and a taste and
an appeal vector from one factorisation of the liker × liked matrix
(``user_taste_vectors``; either vector NULL when the user has too few decisions for it).
Only that job writes them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_like_behaviour",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("decisions_given", sa.Integer(), nullable=False),
        sa.Column("likes_given", sa.Integer(), nullable=False),
        sa.Column("decisions_received", sa.Integer(), nullable=False),
        sa.Column("likes_received", sa.Integer(), nullable=False),
        sa.Column("rate_given", sa.Float(), nullable=False),
        sa.Column("rate_received", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_like_behaviour")),
    )
    op.create_table(
        "user_taste_vectors",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("taste", sa.LargeBinary(), nullable=True),
        sa.Column("appeal", sa.LargeBinary(), nullable=True),
        sa.Column("n_given", sa.Integer(), nullable=False),
        sa.Column("n_received", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_taste_vectors")),
    )


def downgrade() -> None:
    op.drop_table("user_taste_vectors")
    op.drop_table("user_like_behaviour")
