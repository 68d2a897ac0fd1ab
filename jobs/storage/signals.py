"""Reads of source and signal tables as columns, by scope; writes of the signal tables.

Every function takes an open ``Connection``; ``user_ids=None`` means everyone. Loads return
DataFrames with fixed dtypes on both engines (``bulk.read_frame``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from jobs.storage import bulk, schema

# Beyond this many ids a scope is filtered in pandas rather than with an IN list.
IN_LIST_LIMIT = 500


def _in_scope(
    query: sa.Select[Any], column: sa.Column[Any], ids: np.ndarray | None
) -> sa.Select[Any]:
    if ids is None or len(ids) > IN_LIST_LIMIT:
        return query
    return query.where(column.in_([int(i) for i in ids]))


def _filter(frame: pd.DataFrame, column: str, ids: np.ndarray | None) -> pd.DataFrame:
    if ids is None or len(ids) <= IN_LIST_LIMIT:
        return frame
    return frame[frame[column].isin(ids)].reset_index(drop=True)


def read(
    conn: sa.Connection, table: sa.Table, column: str | None = None, ids: np.ndarray | None = None
) -> pd.DataFrame:
    """All of ``table``'s columns, restricted to rows whose ``column`` is in ``ids``."""
    query = sa.select(*table.c)
    if column is not None:
        query = _in_scope(query, table.c[column], ids)
    frame = bulk.read_frame(conn, query, what=f"read {table.name}")
    return _filter(frame, column, ids) if column is not None else frame


def active_user_ids(conn: sa.Connection, user_ids: np.ndarray | None = None) -> np.ndarray:
    """Sorted ids of active users (within ``user_ids`` when given)."""
    users = schema.users
    query = _in_scope(sa.select(users.c.id).where(users.c.is_active), users.c.id, user_ids)
    frame = _filter(bulk.read_frame(conn, query, what="read active users"), "id", user_ids)
    return np.sort(frame["id"].to_numpy(dtype=np.int64))


def all_user_ids(conn: sa.Connection) -> np.ndarray:
    frame = bulk.read_frame(conn, sa.select(schema.users.c.id), what="read users")
    return np.sort(frame["id"].to_numpy(dtype=np.int64))


def sync(
    conn: sa.Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    scope_ids: np.ndarray | None,
    scope_column: str,
) -> dict[str, int]:
    """Make ``table``'s rows for the scope equal ``frame`` (see ``bulk.sync_rows``)."""
    return bulk.sync_rows(
        conn,
        table,
        frame[[c.name for c in table.columns]],
        scope_column=scope_column,
        scope_ids=scope_ids,
    )


def vectors_to_bytes(vectors: np.ndarray) -> list[bytes]:
    """One little-endian float32 blob per row."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    return [row.tobytes() for row in rows]


def bytes_to_vectors(blobs: pd.Series, dim: int) -> np.ndarray:
    """Stack float32 blobs into an ``(n, dim)`` array (empty input gives ``(0, dim)``)."""
    if len(blobs) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    joined = b"".join(blobs.tolist())
    vectors = np.frombuffer(joined, dtype="<f4")
    if vectors.size != len(blobs) * dim:
        raise ValueError(
            f"stored vectors must all have dim {dim}; got {vectors.size} floats "
            f"for {len(blobs)} rows"
        )
    return vectors.reshape(len(blobs), dim).astype(np.float32, copy=True)
