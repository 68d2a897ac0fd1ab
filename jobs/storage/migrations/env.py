"""Alembic environment: runs on the connection handed over by ``jobs.storage.migrate``."""

from __future__ import annotations

from alembic import context

from jobs.storage import schema

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `matchjobs db upgrade`, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=schema.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=lambda name, type_, _parent: (
        not (type_ == "table" and name.startswith(schema.PARTITION_PREFIX))
    ),
)
with context.begin_transaction():
    context.run_migrations()
