"""Writing and clearing the app-owned source tables (users, quiz, interests, ratings, likes).

Only the data-loading commands (``matchjobs seed``, ``matchjobs import``) write source tables;
in production the app does. Frames go through :func:`jobs.storage.bulk.insert_frame` (COPY on
PostgreSQL, ``executemany`` on SQLite) after a cheap, column-wise encoding that keeps the
per-value Python work of the generic path off the hot columns (timestamps, whole-number floats).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import sqlalchemy as sa

from jobs.errors import DatabaseNotEmptyError
from jobs.storage import bulk, schema
from jobs.storage.engine import is_postgres, translate_errors

logger = logging.getLogger(__name__)

# The app's fixed rating dimensions: (id, name, scale_min, scale_max). Shared by every loader so
# that seeded and imported ratings mean the same thing.
RATING_DIMENSIONS: tuple[tuple[int, str, float, float], ...] = (
    (1, "attractive", 1.0, 10.0),
    (2, "sincere", 1.0, 10.0),
    (3, "intelligent", 1.0, 10.0),
    (4, "fun", 1.0, 10.0),
    (5, "ambitious", 1.0, 10.0),
    (6, "shared_interests", 1.0, 10.0),
)

# Insert order respects the one foreign key (interests.subject_id → subjects.id).
WRITE_ORDER: tuple[str, ...] = tuple(t.name for t in schema.SOURCE_TABLES)
DELETE_ORDER: tuple[str, ...] = (
    "likes",
    "ratings",
    "rating_dimensions",
    "user_interests",
    "interests",
    "subjects",
    "quiz_answers",
    "quiz_questions",
    "users",
)


def rating_dimensions_frame() -> pd.DataFrame:
    """The ``rating_dimensions`` rows for :data:`RATING_DIMENSIONS`."""
    return pd.DataFrame(
        {
            "id": np.array([d[0] for d in RATING_DIMENSIONS], dtype=np.int64),
            "name": [d[1] for d in RATING_DIMENSIONS],
            "scale_min": np.array([d[2] for d in RATING_DIMENSIONS], dtype=np.float64),
            "scale_max": np.array([d[3] for d in RATING_DIMENSIONS], dtype=np.float64),
        }
    )


def source_frames(
    *,
    users: pd.DataFrame,
    quiz_questions: pd.DataFrame,
    quiz_answers: pd.DataFrame,
    subjects: pd.DataFrame,
    interests: pd.DataFrame,
    user_interests: pd.DataFrame,
    ratings: pd.DataFrame,
    likes: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """One frame per source table, keyed and ordered like ``schema.SOURCE_TABLES``, with the
    standard :data:`RATING_DIMENSIONS`: what a generator or an importer hands the writer."""
    given = {
        "users": users,
        "quiz_questions": quiz_questions,
        "quiz_answers": quiz_answers,
        "subjects": subjects,
        "interests": interests,
        "user_interests": user_interests,
        "rating_dimensions": rating_dimensions_frame(),
        "ratings": ratings,
        "likes": likes,
    }
    return {table.name: given[table.name] for table in schema.SOURCE_TABLES}


def count_users(conn: sa.Connection, *, active_only: bool = False) -> int:
    """How many rows ``users`` holds (``active_only``: with ``is_active`` set)."""
    query = sa.select(sa.func.count()).select_from(schema.users)
    if active_only:
        query = query.where(schema.users.c.is_active)
    with translate_errors("count of users"):
        return int(conn.execute(query).scalar_one())


def delete_source_rows(conn: sa.Connection) -> dict[str, int]:
    """Delete every row of every source table (derived tables are left to their jobs)."""
    deleted: dict[str, int] = {}
    tables = {t.name: t for t in schema.SOURCE_TABLES}
    with translate_errors("delete of source rows"):
        for name in DELETE_ORDER:
            deleted[name] = int(conn.execute(sa.delete(tables[name])).rowcount or 0)
    logger.info(
        "deleted %d source rows",
        sum(deleted.values()),
        extra={"action": "source.delete", "deleted": deleted},
    )
    return deleted


def delete_all_rows(conn: sa.Connection) -> None:
    """Delete every row of every table of the schema (a scratch database reused)."""
    with translate_errors("delete of every row"):
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(sa.delete(table))


def write_frames(conn: sa.Connection, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Append each frame to the source table of the same name; return rows written per table.

    Runs inside the caller's transaction. Unknown table names are a caller error.
    """
    unknown = sorted(set(frames) - set(WRITE_ORDER))
    if unknown:
        raise ValueError(f"frames must name source tables {list(WRITE_ORDER)}; got {unknown}")
    postgres = is_postgres(conn)
    written: dict[str, int] = {}
    for name in WRITE_ORDER:
        if name not in frames:
            continue
        frame = encode_frame(frames[name], postgres=postgres)
        written[name] = bulk.insert_frame(conn, name, frame)
        logger.debug(
            "wrote %d rows into %s",
            written[name],
            name,
            extra={"action": "source.write", "table": name, "rows": written[name]},
        )
    return written


def encode_frame(frame: pd.DataFrame, *, postgres: bool) -> pd.DataFrame:
    """The frame with its costly columns pre-encoded for ``bulk.insert_frame``.

    - Whole-number float columns become nullable integers: COPY reads ``7`` into a double
      exactly, and the generic path would ``repr`` every float in Python.
    - On PostgreSQL, whole-second UTC timestamps become ISO text in one vectorized call
      (``strftime`` per value costs more than the COPY itself). SQLite keeps datetimes,
      which the generic path stores in SQLAlchemy's own text form.
    - Dates (``datetime64`` without a zone) become ``YYYY-MM-DD`` text on both engines.
    """
    out: dict[str, pd.Series] = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            if postgres:
                values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
                text = np.datetime_as_string(values.astype("datetime64[us]"), unit="us")
                out[name] = pd.Series(text, index=series.index, dtype=object) + "Z"
                if series.isna().any():
                    out[name] = out[name].where(series.notna(), None)
                continue
        elif pd.api.types.is_datetime64_dtype(series):
            text = np.datetime_as_string(series.to_numpy().astype("datetime64[D]"), unit="D")
            out[name] = pd.Series(text, index=series.index, dtype=object).where(
                series.notna(), None
            )
            continue
        elif pd.api.types.is_float_dtype(series):
            values = series.to_numpy()
            finite = values[~np.isnan(values)]
            if (
                len(finite)
                and np.all(finite == np.round(finite))
                and np.all(np.abs(finite) < 2**52)
            ):
                out[name] = pd.Series(values, index=series.index).round().astype("Int64")
                continue
        out[name] = series
    return pd.DataFrame(out, index=frame.index)


def load_into_empty(
    conn: sa.Connection, frames: dict[str, pd.DataFrame], *, replace: bool, what: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Write source frames into a database without users, or after deleting every source row.

    Returns ``(deleted, written)`` rows per table; see :func:`clear_for_load`.
    """
    deleted = clear_for_load(conn, replace=replace, what=what)
    return deleted, write_frames(conn, frames)


def clear_for_load(conn: sa.Connection, *, replace: bool, what: str) -> dict[str, int]:
    """Make the source tables ready for a loader's rows; return the rows deleted per table.

    Refuses (``DatabaseNotEmptyError``) a database that has users unless ``replace``, which
    deletes every source row: a loader never mixes its rows with others.
    """
    existing = count_users(conn)
    if existing and not replace:
        raise DatabaseNotEmptyError(
            f"database already has {existing} users; {what} expects an empty users table "
            "(pass --replace to delete all source rows first)"
        )
    return delete_source_rows(conn) if (existing or replace) else {}
