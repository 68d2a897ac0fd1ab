"""match_scores without its (user_id, score DESC) index: the key serves the API's read

The read index cost 31.5 bytes a row (of 203.2, with the behaviour subscores of 0013: over
the 200-byte budget) and one of the three index builds of every nightly swap. The API's
read no longer walks it in score order anyway: since the exposure spread breaks ties
(``jobs.storage.serving``), it sorts a user's whole list by (score, spread) before the limit.
The primary key (user_id, candidate_id, algorithm_version) leads with the user, so the
read is one range scan of the key (≤ top_k rows, contiguous in the heap because every
writer writes a user's list at once) and a sort of those rows: still well under a
millisecond on the server. ``list_floors`` (count and min per user) reads the same range.

On PostgreSQL dropping the partitioned index drops each partition's share of it; the
downgrade builds them again (the API waits for that, as for any index build).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_match_scores_read", table_name="match_scores")


def downgrade() -> None:
    op.create_index(
        "ix_match_scores_read", "match_scores", ["user_id", sa.literal_column("score DESC")]
    )
