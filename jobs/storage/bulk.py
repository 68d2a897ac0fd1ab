"""Columnar bulk I/O shared by every job: read frames, COPY/insert frames, sync and replace sets.

PostgreSQL uses ``COPY`` both ways; SQLite uses one cursor and ``executemany``. Every function
takes an open SQLAlchemy ``Connection`` inside the caller's transaction and works on both.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from jobs.storage.engine import is_postgres, translate_errors

CHUNK_ROWS = 100_000
# Keep well under SQLite's default limit of bound variables per statement.
SQLITE_IN_CHUNK = 900


# ------------------------------------------------------------------------------ reading


def read_frame(conn: sa.Connection, query: sa.Select[Any], what: str = "read") -> pd.DataFrame:
    """Run ``query`` and return its rows as a DataFrame (one column per selected column).

    On PostgreSQL, queries without binary columns stream through ``COPY … TO STDOUT``, several
    times faster than fetching row tuples.
    """
    columns = [c.name for c in query.selected_columns]
    binary = any(isinstance(c.type, sa.LargeBinary) for c in query.selected_columns)
    with translate_errors(what):
        if is_postgres(conn) and not binary:
            sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            buffer = io.BytesIO()
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy:
                for block in copy:
                    buffer.write(block)
            buffer.seek(0)
            if buffer.getbuffer().nbytes == 0:
                return _empty_frame(query)
            frame = pd.read_csv(buffer, header=None, names=columns, dtype=_csv_dtypes(query))
            return _fix_types(frame, query)
        rows = conn.execute(query).all()
    if not rows:
        return _empty_frame(query)
    # Column by column from plain tuples: from_records probes every SQLAlchemy Row for
    # namedtuple attributes, which cost more than the fetch itself.
    values = zip(*(tuple(row) for row in rows), strict=True)
    frame = pd.DataFrame(dict(zip(columns, (list(v) for v in values), strict=True)))
    return _fix_types(frame, query)


def _csv_dtypes(query: sa.Select[Any]) -> dict[str, Any]:
    dtypes: dict[str, Any] = {}
    for col in query.selected_columns:
        if isinstance(col.type, sa.String | sa.Text):
            dtypes[col.name] = "string"
        elif isinstance(col.type, sa.Boolean):
            dtypes[col.name] = "string"  # 't'/'f', converted in _fix_types
    return dtypes


def _empty_frame(query: sa.Select[Any]) -> pd.DataFrame:
    frame = pd.DataFrame({c.name: pd.Series([], dtype=object) for c in query.selected_columns})
    return _fix_types(frame, query)


def _fix_types(frame: pd.DataFrame, query: sa.Select[Any]) -> pd.DataFrame:
    """Normalize column dtypes so both engines return the same frame."""
    from jobs.storage.schema import UTCDateTime

    for col in query.selected_columns:
        name = col.name
        series = frame[name]
        ctype = col.type
        if isinstance(ctype, UTCDateTime | sa.DateTime):
            frame[name] = pd.to_datetime(series, utc=True, format="ISO8601")
        elif isinstance(ctype, sa.Date):
            frame[name] = pd.to_datetime(series, format="ISO8601")
        elif isinstance(ctype, sa.Boolean):
            if series.dtype != bool:
                frame[name] = series.map(_to_bool).astype("boolean")
        elif isinstance(ctype, sa.Integer):
            if series.isna().any():
                frame[name] = pd.array(series, dtype="Int64")
            else:
                frame[name] = series.astype(np.int64)
        elif isinstance(ctype, sa.Float):
            frame[name] = pd.to_numeric(series, errors="coerce").astype(np.float64)
        elif isinstance(ctype, sa.LargeBinary):
            frame[name] = series.map(lambda v: None if v is None else bytes(v))
    return frame


def _to_bool(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return pd.NA
    if isinstance(value, str):
        return value in ("t", "true", "1")
    return bool(value)


# ------------------------------------------------------------------------------ writing


def _python_rows(frame: pd.DataFrame, columns: Sequence[str]) -> Iterable[tuple[Any, ...]]:
    """Rows as plain Python values (NaN → None, numpy scalars → Python scalars)."""
    arrays = []
    for name in columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            values = [None if pd.isna(v) else v.to_pydatetime() for v in series]
        elif pd.api.types.is_float_dtype(series):
            values = [None if v != v else float(v) for v in series.to_numpy()]
        else:
            values = [None if v is pd.NA else v for v in series.astype(object).tolist()]
            values = [v.item() if isinstance(v, np.generic) else v for v in values]
        arrays.append(values)
    return zip(*arrays, strict=True)


def _copy_csv_frame(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The frame with columns converted to what PostgreSQL's CSV COPY reads back exactly."""
    out = {}
    for name in columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            out[name] = series.dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        elif pd.api.types.is_bool_dtype(series):
            out[name] = series.map({True: "t", False: "f"})
        elif isinstance(
            # the first non-NULL value: a nullable blob column may start with NULL
            next((v for v in series if v is not None), None),
            bytes | bytearray | memoryview,
        ):
            out[name] = series.map(lambda v: None if v is None else "\\x" + bytes(v).hex())
        elif pd.api.types.is_float_dtype(series):
            # repr-exact floats so PostgreSQL stores the same double we computed
            out[name] = series.map(lambda v: "" if v != v else repr(float(v)))
        else:
            out[name] = series
    return pd.DataFrame(out, columns=list(columns))


def insert_frame(conn: sa.Connection, table: sa.Table | str, frame: pd.DataFrame) -> int:
    """Append ``frame``'s rows to ``table`` (columns by name). Returns the rows written."""
    name = table if isinstance(table, str) else table.name
    columns = list(frame.columns)
    if frame.empty:
        return 0
    if isinstance(table, sa.Table):
        frame = _dates_as_text(frame, table)
    with translate_errors(f"bulk write into {name}"):
        if is_postgres(conn):
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            col_sql = ", ".join(f'"{c}"' for c in columns)
            with cursor.copy(f'COPY "{name}" ({col_sql}) FROM STDIN WITH (FORMAT csv)') as copy:
                for start in range(0, len(frame), CHUNK_ROWS):
                    chunk = _copy_csv_frame(frame.iloc[start : start + CHUNK_ROWS], columns)
                    copy.write(chunk.to_csv(header=False, index=False, na_rep=""))
        else:
            placeholders = ", ".join("?" for _ in columns)
            col_sql = ", ".join(f'"{c}"' for c in columns)
            sql = f'INSERT INTO "{name}" ({col_sql}) VALUES ({placeholders})'
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            rows = _python_rows(frame, columns)
            while batch := list(itertools.islice(rows, CHUNK_ROWS)):
                cursor.executemany(sql, [_sqlite_row(r) for r in batch])
    return len(frame)


def _dates_as_text(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """Date columns given as datetimes become ``YYYY-MM-DD`` text, which both engines read."""
    date_columns = [
        c.name
        for c in table.columns
        if isinstance(c.type, sa.Date)
        and c.name in frame.columns
        and pd.api.types.is_datetime64_any_dtype(frame[c.name])
    ]
    if not date_columns:
        return frame
    frame = frame.copy()
    for name in date_columns:
        frame[name] = (
            frame[name].dt.strftime("%Y-%m-%d").astype(object).where(frame[name].notna(), None)
        )
    return frame


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    import datetime as dt

    out = []
    for v in row:
        if isinstance(v, dt.datetime):
            # same text form SQLAlchemy's SQLite DateTime uses: naive UTC ISO
            v = v.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
        elif isinstance(v, dt.date):
            v = v.isoformat()
        out.append(v)
    return tuple(out)


# --------------------------------------------------------------------- set operations


def _scope_clause(conn: sa.Connection, column: str, ids: np.ndarray | None) -> tuple[str, str]:
    """A WHERE fragment restricting ``column`` to ``ids`` via a temp table (``1=1`` = all)."""
    if ids is None:
        return "1=1", ""
    tmp = "tmp_scope_ids"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {tmp}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {tmp} (id BIGINT PRIMARY KEY)")
    insert_frame(conn, tmp, pd.DataFrame({"id": np.unique(np.asarray(ids, dtype=np.int64))}))
    return f'"{column}" IN (SELECT id FROM {tmp})', tmp


def sync_rows(
    conn: sa.Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    *,
    scope_column: str,
    scope_ids: np.ndarray | None,
    touch_column: str | None = "updated_at",
) -> dict[str, int]:
    """Make ``table``'s rows within a scope equal to ``frame``, touching only what changed.

    Rows in scope but not in ``frame`` are deleted, new rows inserted, rows whose values
    differ replaced; identical rows are left alone (their ``touch_column`` keeps its old
    value), so a rerun on unchanged input leaves the table byte-for-byte the same.
    ``scope_ids=None`` means the whole table. Returns counts per kind of change.

    The scope's stored rows are read once and compared here, column by column: an unchanged
    rerun writes nothing, so it costs a read where the first run cost the inserts.
    """
    pk = [c.name for c in table.primary_key.columns]
    columns = [c.name for c in table.columns]
    if list(frame.columns) != columns:
        raise ValueError(f"frame columns must be {columns}; got {list(frame.columns)}")
    if frame.duplicated(pk).any():
        raise ValueError(f"frame for {table.name} repeats a key {pk}")
    if scope_ids is not None and not frame[scope_column].isin(np.asarray(scope_ids)).all():
        raise ValueError(f"frame for {table.name} has rows outside the scope's {scope_column}")
    compare = [c for c in columns if c not in pk and c != touch_column]
    with translate_errors(f"sync of {table.name}"):
        where, _ = _scope_clause(conn, scope_column, scope_ids)
        query = sa.select(*(table.c[c] for c in pk + compare)).where(sa.text(where))
        stored = read_frame(conn, query, what=f"read {table.name} to sync")
        new, changed, gone = _diff(frame, stored, pk, compare)
        _delete_keys(conn, table, pd.concat([frame.iloc[changed][pk], gone], ignore_index=True))
        written = np.sort(np.concatenate([new, changed]))
        insert_frame(conn, table, frame if len(written) == len(frame) else frame.iloc[written])
    return {
        "inserted": len(new),
        "updated": len(changed),
        "deleted": len(gone),
        "unchanged": len(frame) - len(new) - len(changed),
    }


_POSITION = "\0position"


def _diff(
    frame: pd.DataFrame, stored: pd.DataFrame, pk: list[str], compare: list[str]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], pd.DataFrame]:
    """Positions in ``frame`` of new and of changed rows, and the keys of stored rows gone."""
    if stored.empty:  # a first run: everything is new
        return np.arange(len(frame), dtype=np.intp), np.empty(0, dtype=np.intp), stored[pk]
    wanted = frame[pk + compare].reset_index(drop=True)
    wanted[_POSITION] = np.arange(len(wanted))
    both = wanted.merge(stored, on=pk, how="inner", suffixes=("", " (stored)"))
    same = np.ones(len(both), dtype=bool)
    for name in compare:
        same &= _same_values(both[name], both[f"{name} (stored)"])
    positions = both[_POSITION].to_numpy()
    new = np.setdiff1d(np.arange(len(wanted)), positions)
    matched = stored[pk].merge(wanted[pk], on=pk, how="left", indicator=True)
    gone = matched.loc[matched["_merge"] == "left_only", pk].reset_index(drop=True)
    return new.astype(np.intp), np.sort(positions[~same]).astype(np.intp), gone


def _same_values(a: pd.Series, b: pd.Series) -> npt.NDArray[np.bool_]:
    """Elementwise: equal values, or missing on both sides (NaN, None, NaT, NA alike)."""
    if pd.api.types.is_datetime64_any_dtype(a) or pd.api.types.is_datetime64_any_dtype(b):
        a, b = _as_utc(a), _as_utc(b)
    a_missing = a.isna().to_numpy(dtype=bool)
    b_missing = b.isna().to_numpy(dtype=bool)
    equal = (a.astype(object) == b.astype(object)).to_numpy(dtype=bool)
    return (a_missing & b_missing) | (~a_missing & ~b_missing & equal)


def _as_utc(series: pd.Series) -> pd.Series:
    values = pd.to_datetime(series)
    return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")


def _delete_keys(conn: sa.Connection, table: sa.Table, keys: pd.DataFrame) -> None:
    """Delete ``table``'s rows whose primary key is one of ``keys``' rows."""
    if keys.empty:
        return
    pk = list(keys.columns)
    tmp = "tmp_sync_keys"
    key_sql = ", ".join(f'"{k}"' for k in pk)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {tmp}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {tmp} ("
        + ", ".join(f'"{k}" {table.c[k].type.compile(dialect=conn.dialect)} NOT NULL' for k in pk)
        + f", PRIMARY KEY ({key_sql}))"
    )
    insert_frame(conn, tmp, keys)
    if is_postgres(conn):
        conn.exec_driver_sql(f"ANALYZE {tmp}")  # temporary tables are never auto-analyzed
    target = key_sql if len(pk) == 1 else f"({key_sql})"
    conn.exec_driver_sql(
        f'DELETE FROM "{table.name}" WHERE {target} IN (SELECT {key_sql} FROM {tmp})'
    )
    conn.exec_driver_sql(f"DROP TABLE {tmp}")


def ids_clause(conn: sa.Connection, column: str, name: str) -> str:
    if is_postgres(conn):
        return f"{column} = ANY(CAST(:{name} AS BIGINT[]))"
    return f"{column} IN (SELECT value FROM json_each(:{name}))"


def ids_param(conn: sa.Connection, ids: npt.NDArray[np.int64]) -> Any:
    values = [int(i) for i in ids]
    return values if is_postgres(conn) else json.dumps(values)
