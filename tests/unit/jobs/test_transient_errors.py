"""Which database errors a shard's writer retries (``storage.engine.is_transient``)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from jobs.errors import StorageError
from jobs.storage import engine


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.SerializationFailure("could not serialize"), True),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.lookup("08006")("connection failure"), True),
        (psycopg.OperationalError("consuming input failed: server closed the connection"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.CheckViolation("violates check"), False),
        (psycopg.errors.SyntaxError("syntax error"), False),
        (sqlite3.OperationalError("database is locked"), False),
    ],
)
def test_transient_errors_are_the_listed_ones(error: Exception, transient: bool) -> None:
    assert engine.is_transient(error) is transient
    with pytest.raises(StorageError) as raised, engine.translate_errors("write"):
        raise error
    assert raised.value.transient is transient
    wrapped = sa.exc.OperationalError("COPY", {}, error)
    assert engine.is_transient(wrapped) is transient


def test_an_invalidated_connection_is_transient() -> None:
    error = sa.exc.DBAPIError("COMMIT", {}, Exception("gone"), connection_invalidated=True)
    assert engine.is_transient(error)
