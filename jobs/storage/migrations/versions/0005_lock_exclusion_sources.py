"""A function that lets the match job hold likes and users against writers (PostgreSQL)

The publish guard (``jobs.storage.publish_guard.purge_forbidden``) ends every publish of match
scores by taking SHARE locks on ``likes`` and ``users`` until commit, so that no like, pass,
block or profile change can land between its check and the swap. PostgreSQL 15 lets only a
role with UPDATE, DELETE or TRUNCATE on a table take a SHARE lock on it, and the match
job's role may only read those tables (``matchjobs db roles``). So the lock is taken by
this SECURITY DEFINER function, owned by the schema's owner: EXECUTE is granted to the
roles that publish scores, and nothing else of the owner's rights goes with it. NOWAIT:
the caller retries, so it never waits inside a lock cycle with the app's writers.

SQLite has no table locks (its write lock already serializes): nothing to do there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FUNCTION = "matchjobs_lock_exclusion_sources"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE OR REPLACE FUNCTION public.{FUNCTION}() RETURNS void "
        "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ "
        "BEGIN LOCK TABLE public.likes, public.users IN SHARE MODE NOWAIT; END $$"
    )
    op.execute(f"REVOKE ALL ON FUNCTION public.{FUNCTION}() FROM PUBLIC")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS public.{FUNCTION}()")
