"""algorithm_versions: the one scoring hash each version's rows carry

A version could silently hold two scorings: ``config_hash`` hashed every config section,
operational ones too, so a worker started with another ``fanout.max_reverse`` wrote rows
under a second hash beside the nightly's; and nothing stopped a config with other weights
from rewriting an existing version. The match job now stamps rows with the hash of what
changes a score only, records it here per version, and refuses to write a version under
another hash unless told to replace it (``--replace-version``).

The upgrade records each existing version with the hash most of its rows carry, and logs
every version whose rows carry more than one (their counts), so an operator can rerun
its nightly with ``--replace-version`` or retire the version.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

logger = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    op.create_table(
        "algorithm_versions",
        sa.Column("algorithm_version", sa.String(64), nullable=False),
        sa.Column("scoring_hash", sa.String(16), nullable=False),
        sa.Column("first_written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hash_set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("algorithm_version", name=op.f("pk_algorithm_versions")),
    )
    bind = op.get_bind()
    counts = bind.execute(
        sa.text(
            "SELECT algorithm_version, config_hash, count(*) AS n, min(computed_at) AS first "
            "FROM match_scores GROUP BY algorithm_version, config_hash "
            "ORDER BY algorithm_version, count(*) DESC, config_hash"
        )
    ).all()
    chosen: dict[str, tuple[str, object]] = {}
    for version, config_hash, n, first in counts:
        if version in chosen:
            logger.warning(
                "algorithm version %r: %d rows carry config hash %s besides the %s of most "
                "rows; rerun its nightly with --replace-version",
                version,
                n,
                config_hash,
                chosen[version][0],
            )
            continue
        chosen[version] = (config_hash, first)
    table = sa.table(
        "algorithm_versions",
        sa.column("algorithm_version"),
        sa.column("scoring_hash"),
        sa.column("first_written_at"),
        sa.column("hash_set_at"),
    )
    rows = [
        {
            "algorithm_version": version,
            "scoring_hash": config_hash,
            "first_written_at": first,
            "hash_set_at": first,
        }
        for version, (config_hash, first) in chosen.items()
    ]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_table("algorithm_versions")
