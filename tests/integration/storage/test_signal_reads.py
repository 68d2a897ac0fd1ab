"""Scoped reads: small scopes use an IN list, large ones a temporary table; same rows either way."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from jobs.storage import bulk, schema
from jobs.storage import signals as signal_store

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_large_and_small_scopes_read_exactly_their_rows(db) -> None:
    n = 2000
    users = pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "seeking_mask": 2,
            "created_at": pd.Series([T0] * n, dtype="datetime64[us, UTC]"),
            "is_active": np.arange(n) % 3 != 0,
        }
    )
    with db.engine.begin() as conn:
        bulk.insert_frame(conn, schema.users, users)
    rng = np.random.default_rng(1)
    large = rng.choice(np.arange(1, n + 1), size=signal_store.IN_LIST_LIMIT + 300, replace=False)
    small = large[:10]
    with db.engine.connect() as conn:
        for ids in (large, small, np.concatenate([large, large])):
            got = signal_store.read(conn, schema.users, "id", ids, columns=("id",))
            assert sorted(got["id"].tolist()) == sorted(set(ids.tolist()))
            active = signal_store.active_user_ids(conn, ids)
            expected = sorted(i for i in set(ids.tolist()) if (i - 1) % 3 != 0)
            assert active.tolist() == expected
