"""Hostile and non-finite values in the source columns and the config (the fault suite's
property-based scenario, issue 9).

Whatever the app writes, each value is refused at the door (a CHECK constraint), or the
match job processes the user, or it skips the user and counts the reason:
processed + skipped-with-reason = active users, and no NaN or out-of-range score is
written. (Non-finite numbers in every config key: tests/unit/jobs/test_config.py already
tries each float key with NaN and both infinities.)
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import population as population_mod
from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.match import core as match
from jobs.storage import schema, scores

pytestmark = [pytest.mark.faults, pytest.mark.slow]

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
HOSTILE_FLOATS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, -1e308, 95.0, -181.0]),
    st.floats(allow_nan=True, allow_infinity=True),
)
HOSTILE_INTS = st.integers(min_value=-(2**15), max_value=2**15 - 1)
HOSTILE_DATES = st.one_of(
    st.none(),
    st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)),
    st.sampled_from([dt.date(2026, 11, 1), dt.date(2008, 11, 1), dt.date(2008, 11, 2)]),
)
# column -> values the app might send
USER_COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "birth_date": HOSTILE_DATES,
    "gender": st.one_of(st.none(), HOSTILE_INTS),
    "seeking_mask": HOSTILE_INTS,
    "age_min": HOSTILE_INTS,
    "age_max": HOSTILE_INTS,
    "max_distance_km": st.one_of(st.none(), HOSTILE_FLOATS),
    "latitude": st.one_of(st.none(), HOSTILE_FLOATS),
    "longitude": st.one_of(st.none(), HOSTILE_FLOATS),
}
EDITS = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=40),
        st.sampled_from([*USER_COLUMNS, "quiz_answers.value", "ratings.value"]),
        st.data(),
    ),
    min_size=1,
    max_size=6,
)
CONFIG = {
    "ray": {"enabled": False},
    "candidates": {"quiz_k": 20, "interest_k": 20, "fallback_k": 20},
    "scoring": {"top_k": 10},
    "audit": {"sample_users": 5, "min_coverage": 0.0},
}


def _config() -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    for name, values in CONFIG.items():
        data[name] = {**data[name], **values}
    return config_mod.from_mapping(data, source="test")


def _apply(conn: sa.Connection, user_id: int, column: str, value: Any) -> bool:
    """Write one hostile value as the app would; False if the database refused it."""
    if column == "quiz_answers.value":
        sql = "UPDATE quiz_answers SET value = :x WHERE user_id = :u"
    elif column == "ratings.value":
        sql = "UPDATE ratings SET value = :x WHERE rater_id = :u"
    else:
        sql = f"UPDATE users SET {column} = :x WHERE id = :u"
    try:
        with conn.begin_nested():
            conn.execute(sa.text(sql), {"x": value, "u": user_id})
    except (sa.exc.IntegrityError, sa.exc.DataError, OverflowError):
        return False
    return True


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=EDITS)
def test_every_active_user_is_processed_or_skipped_with_a_reason_and_no_nan_is_written(
    db: Any, seed_with_signals: Any, edits: list[tuple[int, str, Any]]
) -> None:
    config = _config()
    with db.engine.connect() as conn:
        seeded = conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
    if not seeded:
        seed_with_signals(db, 40, 13, NOW, config)
    refused = 0
    with db.engine.begin() as conn:
        for user_id, column, data in edits:
            strategy = USER_COLUMNS.get(column, HOSTILE_FLOATS)
            if not _apply(conn, user_id, column, data.draw(strategy)):
                refused += 1
    _, result = runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.all(),
        trigger="on_demand",
        clock=lambda: NOW,
    )
    with db.engine.connect() as conn:
        active = conn.execute(sa.text("SELECT count(*) FROM users WHERE is_active")).scalar_one()
        rows = scores.read_rows(conn, config.algorithm_version)
    dropped = sum(result.skipped.get(r, 0) for r in population_mod.DROP_REASONS)
    assert result.users + dropped == active, (result.users, result.skipped, active, refused)
    values = rows[["score", *(f"s_{n}" for n in schema.SUBSCORE_COLUMNS)]].to_numpy(float)
    assert np.isfinite(values).all()
    assert ((values >= 0) & (values <= 1)).all()


def test_a_limit_beyond_float32_is_no_limit_and_does_not_warn(
    db: Any, seed_with_signals: Any
) -> None:
    """1e308 km passes the CHECK (it is not negative) and loads as +inf: no limit at all."""
    config = _config()
    seed_with_signals(db, 40, 13, NOW, config)
    with db.engine.begin() as conn:
        assert _apply(conn, 1, "max_distance_km", 1e308)
    settings = match.settings_from_config(config)
    with db.engine.connect() as conn:
        pop, _, _ = match.load_clean(conn, NOW, settings)
    (row,) = np.flatnonzero(pop.user_ids == 1)
    assert pop.max_distance_km[row] == np.inf
