"""events.claim_run_id, not_before, deferrals: reclaim by the claiming run's heartbeat, backoff

A claim used to expire by its age alone, so a killed worker's events came back while the
killed run still held its (job, scope) slot in job_runs: every retry was refused and spent
an attempt until the events were dead. A claim now names the worker's batch run and expires
with it (the run's heartbeat is stale, or it finished); ``not_before`` delays the next claim
(exponential backoff) and ``deferrals`` counts hand-backs that spent no attempt.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_run_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("deferrals", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("deferrals")
        batch_op.drop_column("not_before")
        batch_op.drop_column("claim_run_id")
