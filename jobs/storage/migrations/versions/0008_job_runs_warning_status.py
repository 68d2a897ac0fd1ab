"""job_runs.status may be 'succeeded_with_warnings' (a run whose output fell short)

A nightly match run that left most users without a list used to end ``succeeded``. It now
ends ``succeeded_with_warnings`` (or ``failed``, by ``audit.on_low_coverage``). The status
check lists the statuses, and the name is longer than the column's 16 characters: both
change. On SQLite the table is rebuilt (batch mode); it is small.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD = "status IN ('running', 'succeeded', 'failed', 'abandoned')"
NEW = "status IN ('running', 'succeeded', 'succeeded_with_warnings', 'failed', 'abandoned')"


def _replace(check: str, length: int, *, old_length: int) -> None:
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_job_runs_status"), type_="check")
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=old_length),
            type_=sa.String(length=length),
            existing_nullable=False,
        )
        batch_op.create_check_constraint(op.f("ck_job_runs_status"), sa.text(check))


def upgrade() -> None:
    _replace(NEW, 32, old_length=16)


def downgrade() -> None:
    # Runs that ended with warnings did succeed: they become plain successes.
    op.execute("UPDATE job_runs SET status = 'succeeded' WHERE status = 'succeeded_with_warnings'")
    _replace(OLD, 16, old_length=32)
