"""Bulk I/O: frames round-trip identically on both engines; sync touches only what changed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from jobs.storage import bulk
from jobs.storage.schema import user_quiz_vectors, users

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def vector_frame(user_ids: list[int], scale: float, when: dt.datetime) -> pd.DataFrame:
    vectors = [np.full(3, scale * u, dtype=np.float32).tobytes() for u in user_ids]
    return pd.DataFrame(
        {
            "user_id": np.array(user_ids, dtype=np.int64),
            "dim": 3,
            "vector": vectors,
            "n_answers": 5,
            "updated_at": pd.Series([when] * len(user_ids), dtype="datetime64[us, UTC]"),
        }
    )


def sync(conn, frame: pd.DataFrame, scope_ids: np.ndarray | None = None) -> dict[str, int]:
    return bulk.sync_rows(
        conn, user_quiz_vectors, frame, scope_column="user_id", scope_ids=scope_ids
    )


def read_vectors(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        frame = bulk.read_frame(conn, sa.select(*user_quiz_vectors.c))
    return frame.sort_values("user_id").reset_index(drop=True)


def test_users_round_trip_with_nulls_and_types(db) -> None:
    frame = pd.DataFrame(
        {
            "id": np.array([1, 2], dtype=np.int64),
            "birth_date": pd.to_datetime(["1990-05-01", None]),
            "gender": pd.array([0, None], dtype="Int64"),
            "seeking_mask": [2, 1],
            "age_min": [25, 18],
            "age_max": [40, 99],
            "max_distance_km": [50.5, np.nan],
            "latitude": [52.52, np.nan],
            "longitude": [13.405, np.nan],
            "city": ["Berlin", None],
            "created_at": pd.Series([T0, T0], dtype="datetime64[us, UTC]"),
            "last_active_at": pd.Series([T0, pd.NaT], dtype="datetime64[us, UTC]"),
            "is_active": [True, False],
            "display_name": ['Ann, "the" first', "Bo\nb"],
        }
    )
    with db.engine.begin() as conn:
        assert bulk.insert_frame(conn, users, frame) == 2
    with db.engine.connect() as conn:
        back = bulk.read_frame(conn, sa.select(*users.c).order_by(users.c.id))
    assert back["id"].tolist() == [1, 2]
    assert back["gender"].iloc[0] == 0 and pd.isna(back["gender"].iloc[1])
    assert back["max_distance_km"].iloc[0] == 50.5 and np.isnan(back["max_distance_km"].iloc[1])
    assert back["created_at"].iloc[0] == pd.Timestamp(T0)
    assert pd.isna(back["last_active_at"].iloc[1])
    assert back["is_active"].tolist() == [True, False]
    assert back["display_name"].tolist() == ['Ann, "the" first', "Bo\nb"]
    assert back["birth_date"].iloc[0] == pd.Timestamp("1990-05-01")


def test_sync_is_idempotent_and_touches_only_changes(db) -> None:
    with db.engine.begin() as conn:
        counts = sync(conn, vector_frame([1, 2, 3], 1.0, T0))
    assert counts == {"inserted": 3, "updated": 0, "deleted": 0, "unchanged": 0}
    first = read_vectors(db.engine)

    later = T0 + dt.timedelta(days=1)
    with db.engine.begin() as conn:
        counts = sync(conn, vector_frame([1, 2, 3], 1.0, later))
    assert counts == {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 3}
    pd.testing.assert_frame_equal(read_vectors(db.engine), first)  # byte-for-byte, timestamps too

    # user 2 changes, user 3 disappears, user 4 is new
    frame = vector_frame([1, 2, 4], 1.0, later)
    frame.loc[1, "vector"] = np.full(3, 9.0, dtype=np.float32).tobytes()
    with db.engine.begin() as conn:
        counts = sync(conn, frame)
    assert counts == {"inserted": 1, "updated": 1, "deleted": 1, "unchanged": 1}
    after = read_vectors(db.engine)
    assert after["user_id"].tolist() == [1, 2, 4]
    assert after["updated_at"].tolist() == [
        pd.Timestamp(T0),
        pd.Timestamp(later),
        pd.Timestamp(later),
    ]


def test_sync_within_a_scope_leaves_other_users_alone(db) -> None:
    with db.engine.begin() as conn:
        sync(conn, vector_frame([1, 2, 3], 1.0, T0))
    # a single-user scope with no row for user 2 deletes only user 2's row
    with db.engine.begin() as conn:
        counts = sync(conn, vector_frame([], 1.0, T0), np.array([2]))
    assert counts["deleted"] == 1
    assert read_vectors(db.engine)["user_id"].tolist() == [1, 3]


def test_an_unchanged_sync_writes_nothing(db) -> None:
    with db.engine.begin() as conn:
        sync(conn, vector_frame([1, 2, 3], 1.0, T0))
    with db.engine.begin() as conn:
        driver = conn.connection.driver_connection
        before = None if db.is_postgres else driver.total_changes
        counts = sync(conn, vector_frame([1, 2, 3], 1.0, T0 + dt.timedelta(days=1)))
        if db.is_postgres:
            # a transaction gets an id with its first write
            assert conn.exec_driver_sql("SELECT txid_current_if_assigned()").scalar() is None
        else:
            assert driver.total_changes == before
    assert counts["unchanged"] == 3


def test_sync_refuses_repeated_keys_and_rows_outside_the_scope(db) -> None:
    with db.engine.begin() as conn:
        with pytest.raises(ValueError, match="repeats a key"):
            sync(conn, vector_frame([1, 1], 1.0, T0))
        with pytest.raises(ValueError, match="outside the scope"):
            sync(conn, vector_frame([1, 2], 1.0, T0), np.array([1]))
