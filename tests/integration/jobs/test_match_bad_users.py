"""Users whose filter fields cannot be honoured are skipped by the match job and counted.

Regression (issue 9, item 6): a latitude of 95, an infinite longitude or half a location
was counted as ``no_location`` and kept, so the user passed every distance limit and
showed up in lists far away; a seeking mask of 9 was read as 1 (``& 0b111``) and one of 0
or a negative distance limit was kept. Since migration 0006 the schema refuses such rows;
these tests write them past the checks (as a database written before them holds), and
show that both the nightly and the event path leave the users out of every list and
count them in the run's ``job_runs`` metadata.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.storage import schema, scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

# reason -> the damage done to one user each
DAMAGE: dict[str, list[dict[str, Any]]] = {
    "invalid_location": [{"latitude": 95.0}, {"longitude": math.inf}, {"latitude": math.nan}],
    "bad_max_distance": [{"max_distance_km": -10.0}],
    "bad_seeking_mask": [{"seeking_mask": 0}, {"seeking_mask": 9}],
    "bad_gender": [{"gender": 5}],
}


def make_config() -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    data["candidates"].update(quiz_k=30, interest_k=30, fallback_k=30)
    data["scoring"].update(top_k=12)
    data["ray"].update(enabled=False, shard_size=70)
    data["audit"].update(sample_users=0)
    data["fanout"].update(max_reverse=10_000)  # the event path rescores every lister
    return config_mod.from_mapping(data, source="test")


def run_match(db: Any, scope: Scope) -> dict[str, Any]:
    """Run the match job; return its job_runs metadata as stored."""
    run_id, _ = runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=db.url,
        config=make_config(),
        scope=scope,
        trigger="nightly" if scope.is_all else "event",
        clock=lambda: NOW,
    )
    with db.engine.connect() as conn:
        text = conn.execute(
            sa.select(schema.job_runs.c.metadata).where(schema.job_runs.c.id == run_id)
        ).scalar_one()
    return dict(json.loads(text))


def refuse_nothing(conn: sa.Connection) -> None:
    """Let ``conn`` write what the users table's CHECK constraints (migration 0006) refuse,
    as a database written before them holds: SQLite ignores them on this connection,
    PostgreSQL drops them from this test's database."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        return
    names = conn.execute(
        sa.text(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'users'::regclass AND contype = 'c'"
        )
    ).scalars()
    for name in list(names):
        conn.exec_driver_sql(f'ALTER TABLE users DROP CONSTRAINT "{name}"')


@pytest.mark.parametrize("path", ["nightly", "event"])
def test_bad_users_are_in_nobody_s_list_and_counted(
    db: Any, seed_with_signals: Any, path: str
) -> None:
    seed_with_signals(db, 260, 7, NOW, make_config())
    run_match(db, Scope.all())
    with db.engine.connect() as conn:
        before = scores.read_rows(conn, "v1")
        located = set(
            conn.execute(
                sa.select(schema.users.c.id).where(schema.users.c.latitude.is_not(None))
            ).scalars()
        )
    # The most listed located users, who also have a list of their own: the damage matters.
    listed = before.groupby("candidate_id").size().sort_values(ascending=False, kind="stable")
    owners = set(before["user_id"])
    victims = [int(u) for u in listed.index if u in owners and u in located]
    damage = [(reason, change) for reason, changes in DAMAGE.items() for change in changes]
    victims = victims[: len(damage)]
    assert len(victims) == len(damage)

    with db.engine.begin() as conn:
        refuse_nothing(conn)
        for user, (_, change) in zip(victims, damage, strict=True):
            conn.execute(sa.update(schema.users).where(schema.users.c.id == user).values(change))
        no_location = conn.execute(
            sa.select(sa.func.count())
            .select_from(schema.users)
            .where(
                schema.users.c.is_active,
                schema.users.c.latitude.is_(None),
                schema.users.c.longitude.is_(None),
            )
        ).scalar_one()

    metadata = run_match(db, Scope.all() if path == "nightly" else Scope.users(*victims))
    with db.engine.connect() as conn:
        after = scores.read_rows(conn, "v1")
    listed_anywhere = set(after["user_id"]) | set(after["candidate_id"])
    assert not listed_anywhere & set(victims)
    assert len(after) > len(before) / 2  # the others still have their lists
    skipped = metadata["skipped"]
    for reason, changes in DAMAGE.items():
        assert skipped.get(reason) == len(changes), reason
    if path == "nightly":
        # Kept without a location: exactly the users whose both coordinates are NULL, counted
        # as kept, not skipped (regression: every run warned "skipped 89 rows: no_location").
        assert metadata["kept"]["no_location"] == no_location
        assert "no_location" not in skipped
    for user in victims:
        assert np.isin(user, before["candidate_id"].to_numpy())  # they were listed before
