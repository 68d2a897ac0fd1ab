"""How much disk the database and its tables take (PostgreSQL), for benchmarks and reports."""

from __future__ import annotations

import sqlalchemy as sa

from jobs.storage.engine import translate_errors


def database_bytes(conn: sa.Connection) -> int:
    """``pg_database_size`` of the connected database."""
    with translate_errors("size of the database"):
        return int(
            conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        )


def relation_bytes(conn: sa.Connection, name: str) -> int | None:
    """Heap, indexes and TOAST of table ``name`` (``pg_total_relation_size``); None if absent."""
    with translate_errors(f"size of {name}"):
        size = conn.execute(
            sa.text("SELECT pg_total_relation_size(to_regclass(:name))"), {"name": name}
        ).scalar()
    return None if size is None else int(size)
