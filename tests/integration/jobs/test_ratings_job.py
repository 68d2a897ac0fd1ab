"""Ratings job: hand-checked aggregates, standing, preferences; skips; single user = batch."""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction as F

import factories
import numpy as np
import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs.context import Scope
from jobs.storage import schema, signals

T1 = factories.T0 + dt.timedelta(hours=1)
T2 = factories.T0 + dt.timedelta(hours=2)

# Valid ratings (rater, rated, dimension, value); 7 is an inactive user, both scales 1-10.
VALID = [
    (1, 4, 1, 8.0),
    (1, 4, 2, 4.0),
    (2, 4, 1, 6.0),
    (2, 4, 2, 6.0),
    (3, 4, 1, 10.0),
    (1, 5, 1, 2.0),
    (1, 5, 2, 8.0),
    (2, 5, 1, 3.0),
    (2, 5, 2, 8.0),
    (7, 6, 1, 5.0),
    (7, 6, 2, 5.0),
    (1, 7, 1, 9.0),
    (1, 7, 2, 9.0),
]
BAD = [
    (1, 4, 99, 5.0),  # unknown_dimension
    (2, 6, 1, 11.0),  # out_of_scale
    (3, 5, 1, None),  # NULL (NaN): out_of_scale
    (1, 42, 1, 5.0),  # unknown_user: there is no user 42
    (3, 3, 1, 5.0),  # self_rating
]

# By hand, m = 2. g1 = (8+6+10+2+3+5+9)/7 = 43/7, g2 = (4+6+8+8+5+9)/6 = 20/3.
G = {1: F(43, 7), 2: F(20, 3)}
M = 2


def _leniency() -> dict[tuple[int, int], F]:
    """(rater, dimension) -> (Σ v − n·g) / (n + m) over the rater's valid ratings."""
    given: dict[tuple[int, int], list[F]] = {}
    for rater, _, dim, value in VALID:
        given.setdefault((rater, dim), []).append(F(value))
    return {key: (sum(v) - len(v) * G[key[1]]) / (len(v) + M) for key, v in given.items()}


def _aggregates() -> dict[tuple[int, int], tuple[int, F, F]]:
    """(profile, dimension) -> (count, mean, shrunk) of the ratings less their rater's
    leniency (clipped to 1-10), shrunk = (n·mean + m·g) / (n + m); the documented formula
    in exact fractions."""
    bias = _leniency()
    cells: dict[tuple[int, int], list[F]] = {}
    for rater, profile, dim, value in VALID:
        cells.setdefault((profile, dim), []).append(min(max(F(value) - bias[(rater, dim)], 1), 10))
    return {
        key: (len(v), sum(v) / len(v), (sum(v) + M * G[key[1]]) / (len(v) + M))
        for key, v in cells.items()
    }


# Profile 7 is inactive: no row of its own, but rater 1's preference uses its standing.
ALL_CELLS = _aggregates()
AGGREGATES = {key: cell for key, cell in ALL_CELLS.items() if key[0] != 7}
SHRUNK_7 = {d: ALL_CELLS[(7, d)][2] for d in (1, 2)}


def test_leniency_by_hand() -> None:
    """Profile 4 on dimension 1: rater 1 gave 8 (their dimension-1 ratings 8, 2, 9: leniency
    (19 − 3·43/7) / 5 = 4/35), rater 2 gave 6 (6, 3: (9 − 86/7) / 4 = −23/28), rater 3 gave
    10 (10 alone: (10 − 43/7) / 3 = 9/7); mean of 8 − 4/35, 6 + 23/28, 10 − 9/7 = 1093/140."""
    assert _leniency()[(1, 1)] == F(4, 35)
    assert _leniency()[(2, 1)] == F(-23, 28)
    assert _leniency()[(3, 1)] == F(9, 7)
    assert AGGREGATES[(4, 1)][:2] == (3, F(1093, 140))


@pytest.fixture
def ratings_config(default_config) -> config_mod.Config:
    return config_mod.from_mapping(
        {
            **default_config.model_dump(),
            "ratings": {"prior_weight": 2.0, "min_ratings_for_preference": 2},
        }
    )


@pytest.fixture
def ratings_world(load_source) -> None:
    load_source(
        users=[(1,), (2,), (3,), (4,), (5,), (6,), {"id": 7, "is_active": False}],
        rating_dimensions=[(1, 1.0, 10.0), (2, 1.0, 10.0)],
        ratings=VALID + BAD,
    )


def expected_preference(rater: int) -> np.ndarray:
    """The documented formula, one profile at a time, in exact fractions."""
    standing = {
        profile: {d: (AGGREGATES[(profile, d)][2] - 1) / 9 for d in (1, 2)} for profile in (4, 5, 6)
    }
    standing[7] = {d: (SHRUNK_7[d] - 1) / 9 for d in (1, 2)}
    mine: dict[int, list[F]] = {}
    for r, profile, _, value in VALID:
        if r == rater:
            mine.setdefault(profile, []).append((F(value) - 1) / 9)
    liking = {profile: sum(v) / len(v) for profile, v in mine.items()}
    mean_liking = sum(liking.values()) / len(liking)
    covariance = []
    for d in (1, 2):
        mean_standing = sum(standing[p][d] for p in liking) / len(liking)
        covariance.append(
            sum((liking[p] - mean_liking) * (standing[p][d] - mean_standing) for p in liking)
            / len(liking)
        )
    vector = np.array([float(c) for c in covariance])
    return vector / np.linalg.norm(vector)


def stored(db) -> tuple[dict, dict]:
    with db.engine.connect() as conn:
        aggregates = signals.read(conn, schema.profile_rating_aggregates)
        preferences = signals.read(conn, schema.user_rating_preferences)
    cells = {
        (int(r.profile_id), int(r.dimension_id)): (int(r.count), r.mean, r.shrunk_mean)
        for r in aggregates.itertuples()
    }
    vectors = signals.bytes_to_vectors(preferences["vector"], 2)
    prefs = {
        int(u): (vectors[i], int(preferences["n_ratings"][i]))
        for i, u in enumerate(preferences["user_id"])
    }
    return cells, prefs


def stored_standing(db) -> dict[int, tuple[np.ndarray, float]]:
    with db.engine.connect() as conn:
        rows = signals.read(conn, schema.profile_rating_standing)
    assert (rows["dim"] == 2).all()
    centred = signals.bytes_to_vectors(rows["centred"], 2)
    return {
        int(p): (centred[i], float(rows["quality"][i])) for i, p in enumerate(rows["profile_id"])
    }


def test_aggregates_and_preferences_by_hand(
    db, ratings_world, ratings_config, run_signal_job
) -> None:
    run_id, result = run_signal_job("ratings", config=ratings_config)

    cells, prefs = stored(db)
    assert sorted(cells) == sorted(AGGREGATES)
    for key, (count, mean, shrunk) in AGGREGATES.items():
        got_count, got_mean, got_shrunk = cells[key]
        assert got_count == count
        assert got_mean == pytest.approx(float(mean), abs=1e-12)
        assert got_shrunk == pytest.approx(float(shrunk), abs=1e-12)
    assert result.extra["global_means"] == [round(float(G[1]), 6), round(float(G[2]), 6)]

    # Raters 3 (one valid profile), 4, 5, 6 (none) are below the minimum of 2.
    # Where each profile stands, derived from the same g: what the match job reads.
    standing = stored_standing(db)
    assert sorted(standing) == [4, 5, 6]
    for profile, (centred, quality) in standing.items():
        shrunk = {d: AGGREGATES[(profile, d)][2] for d in (1, 2)}
        np.testing.assert_allclose(
            centred, [float((shrunk[d] - G[d]) / 9) for d in (1, 2)], rtol=0, atol=1e-7
        )
        assert quality == pytest.approx(float(sum((shrunk[d] - 1) / 9 for d in (1, 2)) / 2))

    assert sorted(prefs) == [1, 2]
    for rater, n_profiles in ((1, 3), (2, 2)):
        vector, n = prefs[rater]
        assert n == n_profiles
        np.testing.assert_allclose(vector, expected_preference(rater), rtol=0, atol=1e-7)
        assert np.all(np.isfinite(vector))

    skipped = {
        "unknown_dimension": 1,
        "out_of_scale": 2,
        "unknown_user": 1,
        "self_rating": 1,
        "duplicate_rating": 0,  # (rater, rated, dimension) is the primary key
        "too_few_ratings": 4,
        "zero_preference": 0,
    }
    assert result.skipped == skipped
    with db.engine.connect() as conn:
        meta = json.loads(
            conn.execute(
                sa.select(schema.job_runs.c.metadata).where(schema.job_runs.c.id == run_id)
            ).scalar_one()
        )
    assert meta["skipped"] == skipped
    assert meta["writes"]["profile_rating_aggregates"]["inserted"] == 6
    assert meta["writes"]["profile_rating_standing"]["inserted"] == 3
    assert meta["writes"]["user_rating_preferences"]["inserted"] == 2
    assert meta["users"] == 6 and meta["valid_ratings"] == len(VALID)
    assert set(meta["phases_s"]) == {"load", "compute", "write"}


@pytest.mark.parametrize("in_list_limit", [None, 1], ids=["in_list", "whole_table_reads"])
def test_single_user_equals_batch_for_rater_and_rated(
    db, ratings_world, ratings_config, run_signal_job, monkeypatch, in_list_limit
) -> None:
    """Also when the scope's raters outnumber what one IN list takes: then the ratings and
    the raters' per-value counts are read whole and filtered, and must give the same rows."""
    if in_list_limit is not None:
        monkeypatch.setattr(signals, "IN_LIST_LIMIT", in_list_limit)
    run_signal_job("ratings", config=ratings_config)
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.ratings),
            [
                {"rater_id": 3, "rated_id": 6, "dimension_id": d, "value": 9.0, "created_at": T1}
                for d in (1, 2)
            ],
        )
    # The "new rating" event: the rater (now with two rated profiles) and the rated profile.
    _, single = run_signal_job("ratings", Scope.users(3, 6), now=T1, config=ratings_config)
    assert single.rows_written > 0
    after_single = factories.snapshot(db.engine)

    _, batch = run_signal_job("ratings", now=T2, config=ratings_config)
    after_batch = factories.snapshot(db.engine)

    def mine(snapshot: dict, table: str, user: int) -> list:
        return [r for r in snapshot[table] if r[0] == user]

    for table, user in (
        ("profile_rating_aggregates", 6),
        ("profile_rating_standing", 6),
        ("user_rating_preferences", 3),
    ):
        rows = mine(after_single, table, user)
        assert rows and all(r[-1] == T1 for r in rows)
        assert mine(after_batch, table, user) == rows
    # The new ratings moved the global means, so the batch refreshes the other profiles.
    assert batch.extra["writes"]["profile_rating_aggregates"]["updated"] == 4


def test_rerun_is_byte_identical_and_only_rating_tables_written(
    db, ratings_world, ratings_config, run_signal_job
) -> None:
    before = factories.snapshot(db.engine)
    run_signal_job("ratings", config=ratings_config)
    first = factories.snapshot(db.engine)
    assert {name for name in before if before[name] != first[name]} == {
        "profile_rating_aggregates",
        "profile_rating_standing",
        "user_rating_preferences",
    }
    _, again = run_signal_job("ratings", now=T1, config=ratings_config)
    _, single = run_signal_job("ratings", Scope.users(1, 4), now=T2, config=ratings_config)
    assert factories.snapshot(db.engine) == first
    assert again.rows_written == 0 and single.rows_written == 0


def test_inactive_user_loses_aggregates_and_preference(
    db, ratings_world, ratings_config, run_signal_job
) -> None:
    run_signal_job("ratings", config=ratings_config)
    with db.engine.begin() as conn:
        conn.execute(sa.update(schema.users).where(schema.users.c.id == 1).values(is_active=False))
        conn.execute(sa.update(schema.users).where(schema.users.c.id == 4).values(is_active=False))
    _, single = run_signal_job("ratings", Scope.users(1, 4), now=T1, config=ratings_config)
    cells, prefs = stored(db)
    assert sorted(prefs) == [2]
    assert {p for p, _ in cells} == {5, 6}
    assert sorted(stored_standing(db)) == [5, 6]
    assert single.extra["writes"]["profile_rating_aggregates"]["deleted"] == 2
    assert single.extra["writes"]["user_rating_preferences"]["deleted"] == 1

    with db.engine.begin() as conn:
        conn.execute(sa.delete(schema.ratings).where(schema.ratings.c.rated_id == 6))
        conn.execute(sa.delete(schema.users).where(schema.users.c.id == 6))
    run_signal_job("ratings", now=T2, config=ratings_config)
    cells, prefs = stored(db)
    assert {p for p, _ in cells} == {5}
    assert sorted(stored_standing(db)) == [5]
