"""Event kinds for likes, profile edits, deactivation and revived conversations; one JSON
shape for feed reasons; match_set_states (stale and empty sets)

- ``events.kind`` also allows ``like_created``, ``profile_updated``, ``user_deactivated``
  and ``conversation_revived``.
- ``feed_cards.cause`` grows to 32 characters (``conversation_revived``), and ``reason``
  holds ``{"cause": ..., "reasons": [...]}`` for every cause: the plain text of mutual-match
  cards and the bare reasons list of high-score cards are rewritten into it.
- ``match_set_states``: users whose set is known stale (the nightly backfill takes them
  first) or who had no candidate at all (the backfill skips them until their inputs change).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_KINDS = ("quiz_submitted", "interests_changed", "rating_created", "user_changed")
NEW_KINDS = (
    *OLD_KINDS,
    "like_created",
    "profile_updated",
    "user_deactivated",
    "conversation_revived",
)
MUTUAL_TEXT = "You liked each other"


def _kinds(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_events_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_events_kind"), sa.text(_kinds(NEW_KINDS)))
    with op.batch_alter_table("feed_cards", schema=None) as batch_op:
        batch_op.alter_column(
            "cause",
            existing_type=sa.String(length=16),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
    op.execute(
        'UPDATE feed_cards SET reason = \'{"cause": "mutual_match", "reasons": '
        '[{"code": "mutual_like", "text": "' + MUTUAL_TEXT + "\"}]}' "
        "WHERE cause = 'mutual_match'"
    )
    op.execute(
        'UPDATE feed_cards SET reason = \'{"cause": "high_score", "reasons": \' '
        "|| COALESCE(reason, '[]') || '}' WHERE cause = 'high_score'"
    )
    op.create_table(
        "match_set_states",
        sa.Column("algorithm_version", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('stale', 'empty')", name=op.f("ck_match_set_states_state")),
        sa.PrimaryKeyConstraint("algorithm_version", "user_id", name=op.f("pk_match_set_states")),
    )


def downgrade() -> None:
    op.drop_table("match_set_states")
    op.execute("DELETE FROM feed_cards WHERE cause = 'conversation_revived'")
    op.execute(f"UPDATE feed_cards SET reason = '{MUTUAL_TEXT}' WHERE cause = 'mutual_match'")
    # '{"cause": "high_score", "reasons": ' is 35 characters: what follows, minus the brace.
    op.execute(
        "UPDATE feed_cards SET reason = substr(reason, 36, length(reason) - 36) "
        "WHERE cause = 'high_score'"
    )
    with op.batch_alter_table("feed_cards", schema=None) as batch_op:
        batch_op.alter_column(
            "cause",
            existing_type=sa.String(length=32),
            type_=sa.String(length=16),
            existing_nullable=False,
        )
    op.execute(
        "DELETE FROM events WHERE kind NOT IN (" + ", ".join(f"'{k}'" for k in OLD_KINDS) + ")"
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_events_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_events_kind"), sa.text(_kinds(OLD_KINDS)))
