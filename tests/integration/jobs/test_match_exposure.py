"""Exposure does not collapse on ties (issue 11, item 7).

Regression: on a population with no quiz, interest, rating or like data every pair scores
the same, and ties went to the lowest candidate id — every list held the lowest-id
eligible users, most users were suggested to no one. Ties are now broken by a seeded hash
of (user, candidate, version), in the job's ranking and in the API's ORDER BY alike, and
every run's figures say how exposure is spread.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import sqlalchemy as sa

from compute import sorting, spread
from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.storage import api, schema, scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
N_PER_SIDE = 150
TOP_K = 12


def make_config() -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    data["scoring"].update(top_k=TOP_K)
    data["ray"].update(enabled=False, shard_size=70)
    data["audit"].update(sample_users=40)
    return config_mod.from_mapping(data, source="test")


def blank_population(db: Any) -> None:
    """Women seeking men and men seeking women, all alike: one age, one sign-up day, no
    location and nothing else, so every pair scores exactly the same."""
    signed_up = NOW - dt.timedelta(days=10)
    rows = [
        {
            "id": i + 1,
            "birth_date": dt.date(1995, 1, 1),
            "gender": 0 if i < N_PER_SIDE else 1,
            "seeking_mask": 0b010 if i < N_PER_SIDE else 0b001,
            "age_min": 18,
            "age_max": 99,
            "created_at": signed_up,
            "last_active_at": signed_up,
            "is_active": True,
        }
        for i in range(2 * N_PER_SIDE)
    ]
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.users), rows)


def test_ties_spread_over_everyone_and_the_api_serves_the_job_s_order(db: Any) -> None:
    blank_population(db)
    run_id, _ = runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=db.url,
        config=make_config(),
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: NOW,
    )
    with db.engine.connect() as conn:
        rows = scores.read_rows(conn, "v1")
        metadata = json.loads(
            conn.execute(
                sa.select(schema.job_runs.c.metadata).where(schema.job_runs.c.id == run_id)
            ).scalar_one()
        )
        served = api.suggestions(conn, "v1", 1, TOP_K)
    assert rows["score"].nunique() == 1  # every pair ties
    users = 2 * N_PER_SIDE
    appearances = rows.groupby("candidate_id").size()
    assert len(rows) == users * TOP_K
    assert appearances.size >= 0.95 * users
    assert appearances.max() <= 5 * len(rows) / users

    # The job kept, for each user, the eligible candidates with the smallest spread keys.
    seed = spread.spread_seed("v1")
    user = 1
    eligible = np.arange(N_PER_SIDE + 1, 2 * N_PER_SIDE + 1, dtype=np.int64)
    keys = sorting.spread_keys(np.full(eligible.size, user), eligible, seed)
    expected = eligible[np.argsort(keys, kind="stable")][:TOP_K]
    kept = rows[rows["user_id"] == user]["candidate_id"].to_numpy()
    assert sorted(kept.tolist()) == sorted(expected.tolist())
    assert expected.tolist() != sorted(expected.tolist())  # not the lowest ids
    # The API serves them in that order.
    assert served["candidate_id"].tolist() == expected.tolist()

    figure = metadata["exposure"]
    assert figure["over"] == "all_lists" and figure["users"] == users
    assert figure["never_suggested_share"] == round(1 - appearances.size / users, 5)
    assert figure["appearances_max"] == appearances.max()
    assert 0 <= figure["gini"] < 0.3
    assert metadata["recall_audit"]["recall_at_k"] == 1.0
