"""profile_rating_standing: the ratings job writes where each profile stands

The match job used to regroup the whole ``ratings`` table on every load (nightly and every
event) to rebuild the global means, then the shrunk means, standing and quality the ratings
job had already derived. The ratings job now writes what the match job reads: per rated
profile, the centred standing per dimension and the quality, derived with the global means
of the same run. The table starts empty; the next ratings run fills it (until then the
match job treats every profile as unrated: neutral rating signals).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_rating_standing",
        sa.Column("profile_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("centred", sa.LargeBinary(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", name=op.f("pk_profile_rating_standing")),
    )


def downgrade() -> None:
    op.drop_table("profile_rating_standing")
