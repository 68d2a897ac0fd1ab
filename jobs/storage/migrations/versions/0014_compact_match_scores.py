"""match_scores in ≤ 200 bytes a row: reasons as pattern ids, float4 scores, no hash copy

A stored row took ≈ 398 bytes with its three indexes (7.14 GB at 100k users × top 200):
the reasons' JSON text (≈ 150 bytes) repeated on every row, a copy of the version's scoring
hash (now in algorithm_versions, migration 0010) on every row, and eight bytes per score
where the scorer computes four. Now:

- ``reason_patterns`` holds each distinct reasons text once, keyed by a 64-bit digest of
  the text; a row holds the digest (``reason_id``). The API read joins it back.
- ``score`` and the eight subscores are ``real`` (float4): the scorer computes them in
  float32, so no digit it produced is lost.
- ``config_hash`` is gone: ``algorithm_versions.scoring_hash`` is the one hash of a version.
- The columns are recreated in alignment order (8-byte fields, 4-byte fields, the version
  text last): altering types in place would leave the dropped columns' slots in every row.
- ``algorithm_versions.swapped_at``: when the nightly last swapped a version's partition in
  (``storage.keep_versions``).

The upgrade copies every row (PostgreSQL: each version keeps its partition) and rebuilds the
keys; API reads wait for it, so run it outside the hours the app serves. The downgrade
converts back, taking ``config_hash`` from ``algorithm_versions`` (empty if none).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# The eight of 0013 (appeal and reciprocity came last there: PostgreSQL appended them).
SUBSCORES = (
    "quiz",
    "interests",
    "rating_quality",
    "rating_fit",
    "newness",
    "proximity",
    "appeal",
    "reciprocity",
)
KEY = ("user_id", "candidate_id", "algorithm_version")


def reason_id(text: str) -> int:
    """jobs.storage.scores.reason_id, written out: a migration must not change with the code."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def _checks() -> list[sa.CheckConstraint]:
    checks = [
        sa.CheckConstraint("score >= 0 AND score <= 1", name=op.f("ck_match_scores_score_range"))
    ]
    for name in SUBSCORES:
        checks.append(
            sa.CheckConstraint(
                f"s_{name} >= 0 AND s_{name} <= 1", name=op.f(f"ck_match_scores_s_{name}_range")
            )
        )
    return checks


def _columns(compact: bool) -> list[sa.Column]:
    version = sa.Column("algorithm_version", sa.String(64), nullable=False)
    ids = [
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", sa.BigInteger(), nullable=False),
    ]
    when = sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False)
    number = sa.REAL if compact else sa.Float
    numbers = [sa.Column("score", number(), nullable=False)]
    numbers += [sa.Column(f"s_{name}", number(), nullable=False) for name in SUBSCORES]
    if compact:
        reason = sa.Column("reason_id", sa.BigInteger(), nullable=False)
        return [*ids, reason, when, *numbers, version]
    return [
        version,
        *ids,
        *numbers,
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=16), nullable=False),
        when,
    ]


def _create(compact: bool, postgresql: bool) -> None:
    # PostgreSQL: the key comes after the copy (_keys), once the old table and its
    # partitions' indexes are gone, so every index gets its plain name. SQLite cannot add a
    # primary key later.
    extra: list[sa.SchemaItem] = [] if postgresql else [_primary_key()]
    options = {"postgresql_partition_by": "LIST (algorithm_version)"} if postgresql else {}
    op.create_table("match_scores", *_columns(compact), *_checks(), *extra, **options)


def _primary_key() -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*KEY, name=op.f("pk_match_scores"))


def _keys(postgresql: bool) -> None:
    if postgresql:
        op.create_primary_key(op.f("pk_match_scores"), "match_scores", list(KEY))
    op.create_index(
        "ix_match_scores_read", "match_scores", ["user_id", sa.literal_column("score DESC")]
    )
    op.create_index("ix_match_scores_reverse", "match_scores", ["candidate_id"])


def _set_aside(postgresql: bool) -> list[tuple[str, str]]:
    """Rename match_scores (PostgreSQL: and its partitions) out of the way; the partitions'
    names and bounds."""
    bind = op.get_bind()
    parts: list[tuple[str, str]] = []
    if postgresql:
        parts = [
            (str(name), str(bound))
            for name, bound in bind.execute(
                sa.text(
                    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'match_scores'::regclass ORDER BY c.relname"
                )
            ).all()
        ]
        for name, _ in parts:
            op.execute(f'ALTER TABLE "{name}" RENAME TO "{name}_old"')
    else:
        op.drop_index("ix_match_scores_read", table_name="match_scores")
        op.drop_index("ix_match_scores_reverse", table_name="match_scores")
    op.rename_table("match_scores", "match_scores_old")
    if postgresql:
        # Index-backed constraint names are schema-wide: free the key's for the new table.
        op.execute(
            "ALTER TABLE match_scores_old RENAME CONSTRAINT pk_match_scores TO pk_match_scores_old"
        )
        op.execute("ALTER INDEX ix_match_scores_read RENAME TO ix_match_scores_old_read")
        op.execute("ALTER INDEX ix_match_scores_reverse RENAME TO ix_match_scores_old_reverse")
    return parts


def _partitions(parts: list[tuple[str, str]]) -> None:
    for name, bound in parts:
        op.execute(f'CREATE TABLE "{name}" PARTITION OF match_scores {bound}')


def _numbers() -> str:
    return ", ".join(["score", *(f"s_{name}" for name in SUBSCORES)])


def upgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    op.create_table(
        "reason_patterns",
        # The id is a digest of the text, never a serial.
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reason_patterns")),
    )
    with op.batch_alter_table("algorithm_versions") as batch:
        batch.add_column(sa.Column("swapped_at", sa.DateTime(timezone=True), nullable=True))
    parts = _set_aside(postgresql)
    texts = bind.execute(sa.text("SELECT DISTINCT reasons FROM match_scores_old")).scalars()
    patterns = sa.table("reason_patterns", sa.column("id"), sa.column("reasons"))
    rows = [{"id": reason_id(text), "reasons": text} for text in texts]
    if rows:
        op.bulk_insert(patterns, rows)
    _create(compact=True, postgresql=postgresql)
    _partitions(parts)
    numbers = _numbers()
    op.execute(
        f"INSERT INTO match_scores (user_id, candidate_id, reason_id, computed_at, {numbers}, "
        f"algorithm_version) SELECT o.user_id, o.candidate_id, p.id, o.computed_at, {numbers}, "
        "o.algorithm_version FROM match_scores_old o JOIN reason_patterns p "
        "ON p.reasons = o.reasons"
    )
    op.drop_table("match_scores_old")
    _keys(postgresql)


def downgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    parts = _set_aside(postgresql)
    _create(compact=False, postgresql=postgresql)
    _partitions(parts)
    numbers = _numbers()
    op.execute(
        f"INSERT INTO match_scores (algorithm_version, user_id, candidate_id, {numbers}, "
        f"reasons, config_hash, computed_at) SELECT o.algorithm_version, o.user_id, "
        f"o.candidate_id, {numbers}, p.reasons, COALESCE(v.scoring_hash, ''), o.computed_at "
        "FROM match_scores_old o JOIN reason_patterns p ON p.id = o.reason_id "
        "LEFT JOIN algorithm_versions v ON v.algorithm_version = o.algorithm_version"
    )
    op.drop_table("match_scores_old")
    _keys(postgresql)
    with op.batch_alter_table("algorithm_versions") as batch:
        batch.drop_column("swapped_at")
    op.drop_table("reason_patterns")
