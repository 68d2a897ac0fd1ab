"""Tiny hand-made source tables for the signal-job tests, and whole-database snapshots.

``source_frames(**tables)`` turns short row specs into frames with every required column:
a row is a tuple (the table's leading columns, in order) or a dict (any columns), and every
column not given takes the default below. The ``load_source`` fixture (conftest.py) writes
them; tests state only what the assertion depends on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import sqlalchemy as sa

from jobs.storage import schema

T0 = dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)

# Leading columns a tuple row fills, per table.
TUPLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id",),
    "quiz_questions": ("id", "scale_min", "scale_max", "weight"),
    "quiz_answers": ("user_id", "question_id", "value"),
    "subjects": ("id", "name"),
    "interests": ("id", "subject_id", "name"),
    "user_interests": ("user_id", "interest_id", "weight"),
    "rating_dimensions": ("id", "scale_min", "scale_max"),
    "ratings": ("rater_id", "rated_id", "dimension_id", "value"),
    "likes": ("user_id", "target_id", "kind"),
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "users": {
        "birth_date": dt.date(1995, 6, 1),
        "gender": 0,
        "seeking_mask": 2,
        "age_min": 18,
        "age_max": 99,
        "max_distance_km": 50.0,
        "latitude": 52.52,
        "longitude": 13.40,
        "city": "Berlin",
        "created_at": T0 - dt.timedelta(days=30),
        "last_active_at": T0,
        "is_active": True,
        "display_name": None,
    },
    "quiz_questions": {"scale_min": 1.0, "scale_max": 5.0, "weight": 1.0, "is_active": True},
    "quiz_answers": {"answered_at": T0},
    "subjects": {},
    "interests": {},
    "user_interests": {"weight": None, "created_at": T0},
    "rating_dimensions": {"scale_min": 1.0, "scale_max": 10.0},
    "ratings": {"created_at": T0},
    "likes": {"kind": "like", "created_at": T0},
}


def _row(table: str, spec: tuple[Any, ...] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec, dict):
        given = dict(spec)
    else:
        names = TUPLE_COLUMNS[table]
        if len(spec) > len(names):
            raise ValueError(f"{table} tuple rows hold at most {names}; got {spec}")
        given = dict(zip(names, spec, strict=False))
    row = {**DEFAULTS[table], **given}
    # Columns whose default depends on the row.
    if table == "quiz_questions":
        row.setdefault("text", f"question {row['id']}")
    elif table == "subjects":
        row.setdefault("name", f"subject {row['id']}")
    elif table == "interests":
        row.setdefault("name", f"interest {row['id']}")
    elif table == "rating_dimensions":
        row.setdefault("name", f"dimension {row['id']}")
    return row


def source_frames(**tables: list[tuple[Any, ...] | dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """Frames for the named source tables (keyword = table name), columns in table order."""
    frames = {}
    for name, specs in tables.items():
        if name not in TUPLE_COLUMNS:
            raise ValueError(f"{name} is not a source table; choose from {sorted(TUPLE_COLUMNS)}")
        table = schema.metadata.tables[name]
        rows = [_row(name, spec) for spec in specs]
        columns = [c.name for c in table.columns if any(c.name in r for r in rows)] or [
            c.name for c in table.columns
        ]
        frame = pd.DataFrame(rows, columns=columns)
        for column in table.columns:
            if column.name in frame and isinstance(column.type, schema.UTCDateTime):
                frame[column.name] = pd.to_datetime(frame[column.name], utc=True)
            elif column.name in frame and isinstance(column.type, sa.Date):
                frame[column.name] = pd.to_datetime(frame[column.name])
            elif column.name in frame and isinstance(column.type, sa.Float):
                frame[column.name] = frame[column.name].astype("float64")
        frames[name] = frame
    return frames


def count_source_rows(conn: sa.Connection) -> dict[str, int]:
    """Rows per source table."""
    return {
        table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        for table in schema.SOURCE_TABLES
    }


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (job_runs excepted), in primary-key order, as stored."""
    out = {}
    existing = set(sa.inspect(engine).get_table_names())
    with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            if table.name == "job_runs" or table.name not in existing:
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            out[table.name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*order))]
    return out


def rows_of(engine: sa.Engine, table: sa.Table) -> list[tuple[Any, ...]]:
    """``table``'s rows as stored, in primary-key order."""
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        ]
