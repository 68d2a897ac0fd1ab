"""match_scores partitioned by algorithm_version on PostgreSQL (SQLite: unchanged)

The nightly writes a version's whole output into a fresh, unindexed table, indexes it,
then swaps it in for the version's partition in one short transaction: bulk COPY without
index maintenance, old and new sets never mixed, and no 18M-row delete. Rows of versions
without a partition of their own live in the default partition.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_RENAME_OLD = """
ALTER TABLE match_scores RENAME TO match_scores_old;
ALTER TABLE match_scores_old RENAME CONSTRAINT pk_match_scores TO pk_match_scores_old;
ALTER TABLE match_scores_old RENAME CONSTRAINT ck_match_scores_score_range
    TO ck_match_scores_old_score_range;
ALTER INDEX ix_match_scores_read RENAME TO ix_match_scores_old_read;
ALTER INDEX ix_match_scores_reverse RENAME TO ix_match_scores_old_reverse;
"""

_KEYS = """
ALTER TABLE match_scores ADD CONSTRAINT pk_match_scores
    PRIMARY KEY (algorithm_version, user_id, candidate_id);
ALTER TABLE match_scores ADD CONSTRAINT ck_match_scores_score_range
    CHECK (score >= 0 AND score <= 1);
CREATE INDEX ix_match_scores_read ON match_scores (algorithm_version, user_id, score DESC);
CREATE INDEX ix_match_scores_reverse ON match_scores (algorithm_version, candidate_id);
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_RENAME_OLD)
    op.execute(
        "CREATE TABLE match_scores (LIKE match_scores_old INCLUDING DEFAULTS) "
        "PARTITION BY LIST (algorithm_version)"
    )
    op.execute(_KEYS)
    op.execute("CREATE TABLE match_scores_default PARTITION OF match_scores DEFAULT")
    # Existing versions get their partition now, so no nightly has to delete them from the
    # default partition row by row. The name is jobs.storage.swap.partition_name's,
    # written out here because a migration must not change when application code does.
    bind = op.get_bind()
    versions = bind.execute(sa.text("SELECT DISTINCT algorithm_version FROM match_scores_old"))
    for (version,) in versions.all():
        name = "match_scores_v_" + hashlib.sha1(version.encode()).hexdigest()[:12]
        literal = "'" + version.replace("'", "''") + "'"
        op.execute(f'CREATE TABLE "{name}" PARTITION OF match_scores FOR VALUES IN ({literal})')
    op.execute("INSERT INTO match_scores SELECT * FROM match_scores_old")
    op.execute("DROP TABLE match_scores_old")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_RENAME_OLD)
    op.execute("CREATE TABLE match_scores (LIKE match_scores_old INCLUDING DEFAULTS)")
    op.execute(_KEYS)
    op.execute("INSERT INTO match_scores SELECT * FROM match_scores_old")
    op.execute("DROP TABLE match_scores_old")
