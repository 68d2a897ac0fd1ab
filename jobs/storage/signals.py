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
from jobs.storage.engine import translate_errors

# Beyond this many ids a scope is joined against a temporary table instead of an IN list.
IN_LIST_LIMIT = 500
_READ_IDS = sa.Table(
    "tmp_read_ids", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True)
)


def _in_scope(
    conn: sa.Connection, query: sa.Select[Any], column: sa.Column[Any], ids: np.ndarray | None
) -> sa.Select[Any]:
    """``query`` restricted to rows whose ``column`` is in ``ids`` (``None``: no restriction).

    Run the returned query before building the next one: large scopes share one temporary
    table, refilled per call.
    """
    if ids is None:
        return query
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    if unique.size <= IN_LIST_LIMIT:
        return query.where(column.in_([int(i) for i in unique]))
    # A semi-join against a temporary table: one round trip however many ids, and the
    # planner sees a table rather than thousands of literals.
    with translate_errors("fill the scope's id table"):
        conn.exec_driver_sql("DROP TABLE IF EXISTS tmp_read_ids")
        conn.exec_driver_sql("CREATE TEMPORARY TABLE tmp_read_ids (id BIGINT PRIMARY KEY)")
    bulk.insert_frame(conn, _READ_IDS.name, pd.DataFrame({"id": unique}))
    return query.where(column.in_(sa.select(_READ_IDS.c.id)))


def read(
    conn: sa.Connection,
    table: sa.Table,
    column: str | None = None,
    ids: np.ndarray | None = None,
    *,
    columns: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """``table``'s columns (or ``columns``), restricted to rows whose ``column`` is in ``ids``."""
    selected = table.c if columns is None else [table.c[name] for name in columns]
    query = sa.select(*selected)
    if column is not None:
        query = _in_scope(conn, query, table.c[column], ids)
    return bulk.read_frame(conn, query, what=f"read {table.name}")


def active_user_ids(conn: sa.Connection, user_ids: np.ndarray | None = None) -> np.ndarray:
    """Sorted ids of active users (within ``user_ids`` when given)."""
    users = schema.users
    query = _in_scope(conn, sa.select(users.c.id).where(users.c.is_active), users.c.id, user_ids)
    frame = bulk.read_frame(conn, query, what="read active users")
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


def vector_rows(
    table: sa.Table,
    user_ids: np.ndarray,
    vectors: np.ndarray,
    counts: np.ndarray,
    now: Any,
) -> pd.DataFrame:
    """Rows for a per-user vector table (``user_id, dim, vector, n_<count>, updated_at``).

    ``table`` names the count column (its fourth column); ``now`` stamps ``updated_at``,
    which ``sync`` keeps on rows whose other values did not change.
    """
    names = [c.name for c in table.columns]
    expected = ["user_id", "dim", "vector", names[3], "updated_at"]
    if names != expected:
        raise ValueError(f"{table.name} is not a per-user vector table; columns {names}")
    n = len(user_ids)
    return pd.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=np.int64),
            "dim": np.full(n, vectors.shape[1], dtype=np.int64),
            "vector": vectors_to_bytes(vectors),
            names[3]: np.asarray(counts, dtype=np.int64),
            "updated_at": stamps(n, now),
        }
    )


def stamps(n: int, now: Any) -> pd.Series:
    """``n`` copies of the UTC timestamp ``now`` as a datetime column."""
    return pd.Series(pd.DatetimeIndex([pd.Timestamp(now)]).tz_convert("UTC").repeat(n))


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


# ------------------------------------------------------------------ signal-job specific reads


def existing_user_ids(conn: sa.Connection, user_ids: np.ndarray | None = None) -> np.ndarray:
    """Sorted ids of users that exist, active or not (within ``user_ids`` when given)."""
    users = schema.users
    query = _in_scope(conn, sa.select(users.c.id), users.c.id, user_ids)
    frame = bulk.read_frame(conn, query, what="read users")
    return np.sort(frame["id"].to_numpy(dtype=np.int64))


def interest_document_frequency(
    conn: sa.Connection, exclude_user_ids: np.ndarray
) -> tuple[pd.DataFrame, int]:
    """IDF counts over the stored index of active users, leaving out ``exclude_user_ids``.

    Returns ``(interest_id, df)`` rows for interests still in the catalogue, and the number of
    those users holding at least one of them: what a single-user interest run adds its own
    fresh counts to. Aggregated in the database: ~80 rows instead of the whole index.
    """
    index, users, catalogue = schema.user_interest_index, schema.users, schema.interests
    entries = (
        sa.select(index.c.user_id, index.c.interest_id)
        .select_from(
            index.join(users, users.c.id == index.c.user_id).join(
                catalogue, catalogue.c.id == index.c.interest_id
            )
        )
        .where(users.c.is_active, index.c.user_id.not_in([int(u) for u in exclude_user_ids]))
        .subquery()
    )
    per_interest = sa.select(entries.c.interest_id, sa.func.count().label("df")).group_by(
        entries.c.interest_id
    )
    frame = bulk.read_frame(conn, per_interest, what="count user_interest_index per interest")
    with translate_errors("count users in user_interest_index"):
        n_users = conn.execute(
            sa.select(sa.func.count(sa.distinct(entries.c.user_id)))
        ).scalar_one()
    return frame, int(n_users)


RATING_COLUMNS = ("rater_id", "rated_id", "dimension_id", "value")


def ratings_touching(
    conn: sa.Connection, rater_ids: np.ndarray, rated_ids: np.ndarray
) -> pd.DataFrame:
    """Ratings given by one of ``rater_ids`` or received by one of ``rated_ids``.

    Columns ``RATING_COLUMNS``, sorted by the primary key (rater, rated, dimension) so that
    sums over them run in the same order as over :func:`read_ratings` of everyone.
    """
    ratings = schema.ratings
    rater_ids = np.unique(np.asarray(rater_ids, dtype=np.int64))
    rated_ids = np.unique(np.asarray(rated_ids, dtype=np.int64))
    query = sa.select(*(ratings.c[name] for name in RATING_COLUMNS))
    if len(rater_ids) + len(rated_ids) <= IN_LIST_LIMIT:
        conditions = []
        if len(rater_ids):
            conditions.append(ratings.c.rater_id.in_([int(i) for i in rater_ids]))
        if len(rated_ids):
            conditions.append(ratings.c.rated_id.in_([int(i) for i in rated_ids]))
        if not conditions:
            return _sorted_ratings(
                bulk.read_frame(conn, query.where(sa.false()), what="read ratings")
            )
        frame = bulk.read_frame(conn, query.where(sa.or_(*conditions)), what="read ratings")
    else:
        frame = bulk.read_frame(conn, query, what="read ratings")
        keep = frame["rater_id"].isin(rater_ids) | frame["rated_id"].isin(rated_ids)
        frame = frame[keep]
    return _sorted_ratings(frame)


def read_ratings(conn: sa.Connection) -> pd.DataFrame:
    """Every rating, columns ``RATING_COLUMNS``, sorted by (rater, rated, dimension)."""
    ratings = schema.ratings
    query = sa.select(*(ratings.c[name] for name in RATING_COLUMNS))
    return _sorted_ratings(bulk.read_frame(conn, query, what="read ratings"))


def _sorted_ratings(frame: pd.DataFrame) -> pd.DataFrame:
    # A fixed row order makes float sums (means, covariances) bit-reproducible, whichever
    # subset of rows a run reads and whatever order the database returns them in.
    order = np.lexsort(
        (
            frame["dimension_id"].to_numpy(dtype=np.int64),
            frame["rated_id"].to_numpy(dtype=np.int64),
            frame["rater_id"].to_numpy(dtype=np.int64),
        )
    )
    return frame.iloc[order].reset_index(drop=True)


def _valid_rating_counts(*keys: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """Valid ratings (as ``compute.ratings.validate_ratings`` keeps them, see
    :func:`valid_rating_value_counts`) counted per ``keys``, as columns ``keys…, n``, sorted
    by the keys."""
    ratings, dims, users = schema.ratings, schema.rating_dimensions, schema.users
    raters, rated = users.alias("raters"), users.alias("rated")
    return (
        sa.select(*keys, sa.func.count().label("n"))
        .select_from(
            ratings.join(dims, dims.c.id == ratings.c.dimension_id)
            .join(raters, raters.c.id == ratings.c.rater_id)
            .join(rated, rated.c.id == ratings.c.rated_id)
        )
        .where(
            ratings.c.value >= dims.c.scale_min,
            ratings.c.value <= dims.c.scale_max,
            ratings.c.rater_id != ratings.c.rated_id,
        )
        .group_by(*keys)
        .order_by(*keys)
    )


def valid_rating_values_by_rater(conn: sa.Connection, rater_ids: np.ndarray) -> pd.DataFrame:
    """Valid ratings given by ``rater_ids``, counted per (rater, dimension, value): the input
    of their leniency (``compute.ratings.rater_leniency``), without reading anyone else's.

    Valid as in :func:`valid_rating_value_counts`. Columns ``rater_id``, ``dimension_id``
    int64, ``value`` float64, ``n`` int64, sorted by those three, as
    ``compute.ratings.value_groups`` sorts them in a batch run.
    """
    ratings = schema.ratings
    rater_ids = np.unique(np.asarray(rater_ids, dtype=np.int64))
    query = _valid_rating_counts(ratings.c.rater_id, ratings.c.dimension_id, ratings.c.value)
    if len(rater_ids) <= IN_LIST_LIMIT:
        query = query.where(ratings.c.rater_id.in_([int(i) for i in rater_ids]))
    frame = bulk.read_frame(conn, query, what="count valid ratings per rater and value")
    if len(rater_ids) > IN_LIST_LIMIT:
        frame = frame[frame["rater_id"].isin(rater_ids)].reset_index(drop=True)
    for name in ("rater_id", "dimension_id", "n"):
        frame[name] = frame[name].astype(np.int64)
    frame["value"] = frame["value"].astype(np.float64)
    return frame


def valid_rating_value_counts(conn: sa.Connection) -> pd.DataFrame:
    """How many valid ratings hold each value, per dimension: the input of the global means.

    Valid means what ``compute.ratings.validate_ratings`` keeps: a known dimension, a value
    within its scale (NULL, NaN and infinities fail the comparison on both engines), a rater
    and a rated profile that exist, not a self-rating (the primary key rules out duplicates).
    Columns ``dimension_id`` int64, ``value`` float64, ``n`` int64, sorted by dimension then
    value. Grouping by value keeps the result tiny for rating scales and makes the mean
    independent of the order the database scans rows in, so every run, batch or single
    profile, derives bit-identical global means without reading every rating.
    """
    ratings = schema.ratings
    query = _valid_rating_counts(ratings.c.dimension_id, ratings.c.value)
    frame = bulk.read_frame(conn, query, what="count valid ratings per value")
    frame["n"] = frame["n"].astype(np.int64)
    return frame
