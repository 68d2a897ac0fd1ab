"""A set computed from a snapshot never publishes a pair that a later change forbids.

Regression (issue 9.1): a block made while the nightly ran was served again after its swap
(as the user's #1 suggestion, and the reverse pair too). Also the age filter was off by one
on birthdays: ``days / 365.25`` made a user turning 34 today pass an ``age_max: 33`` limit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs.match import core as match
from jobs.storage import population as population_store
from jobs.storage import scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[3]


def small_config(**ray: Any) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    data["scoring"]["top_k"] = 20
    data["audit"]["sample_users"] = 10
    data["ray"] = {**data["ray"], "enabled": False, "shard_size": 60, **ray}
    return config_mod.from_mapping(data, source="test")


def stored_pairs(db: Any, version: str = "v1") -> set[tuple[int, int]]:
    with db.engine.connect() as conn:
        frame = scores.read_rows(conn, version)
    return set(zip(frame["user_id"].tolist(), frame["candidate_id"].tolist(), strict=True))


def involving(pairs: set[tuple[int, int]], user: int) -> set[tuple[int, int]]:
    return {p for p in pairs if user in p}


def test_changes_recorded_after_the_snapshot_are_never_published(
    db: Any, seed_with_signals: Any
) -> None:
    """Block, deactivation and a narrowed age range, all committed between the snapshot and
    the publish: the publishing transaction drops exactly the rows they forbid."""
    config = seed_with_signals(db, 200, 3, NOW, small_config())
    settings = match.settings_from_config(config)
    with db.engine.connect() as conn:
        guard = population_store.filter_snapshot(conn)
        pop, _, _ = match.load_clean(conn, NOW, settings)
    indexes = match.build_indexes(pop, settings)
    output = match.score_rows(pop, indexes, np.arange(pop.n_users, dtype=np.int64), settings)
    frame = output.frame
    computed = set(zip(frame["user_id"].tolist(), frame["candidate_id"].tolist(), strict=True))
    best = frame.sort_values("score", ascending=False).iloc[0]
    blocker, blocked = int(best["user_id"]), int(best["candidate_id"])
    others = [u for u in frame["user_id"].unique().tolist() if u not in (blocker, blocked)]
    leaver, narrowed = others[0], others[1]
    assert (blocked, blocker) in computed or (blocker, blocked) in computed
    # The app, after the rows were computed and before they are published.
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO likes (user_id, target_id, kind, created_at) "
                "VALUES (:a, :b, 'block', CURRENT_TIMESTAMP)"
            ),
            {"a": blocker, "b": blocked},
        )
        conn.execute(sa.text("UPDATE users SET is_active = false WHERE id = :u"), {"u": leaver})
        conn.execute(
            sa.text("UPDATE users SET age_min = 18, age_max = 18 WHERE id = :u"), {"u": narrowed}
        )
    with db.engine.begin() as conn:
        _, written = scores.replace_user_sets(
            conn,
            output.user_ids,
            frame,
            version=settings.version,
            computed_at=NOW,
            guard=guard,
        )
    served = stored_pairs(db)
    forbidden = {(blocker, blocked), (blocked, blocker)}
    forbidden |= involving(computed, leaver) | involving(computed, narrowed)
    assert served == computed - forbidden
    assert written == len(served)
    assert not involving(served, leaver) and not involving(served, narrowed)


def test_an_unchanged_population_publishes_everything(db: Any, seed_with_signals: Any) -> None:
    """The guard is no blanket purge: nothing changed, nothing is dropped (a NULL in another
    user's filter column, which turns the column into floats, changes nobody's digest)."""
    config = seed_with_signals(db, 120, 4, NOW, small_config())
    settings = match.settings_from_config(config)
    with db.engine.connect() as conn:
        guard = population_store.filter_snapshot(conn)
        pop, _, _ = match.load_clean(conn, NOW, settings)
    output = match.score_rows(
        pop, match.build_indexes(pop, settings), np.arange(pop.n_users, dtype=np.int64), settings
    )
    missing_limit = int(output.frame["user_id"].iloc[0])
    with db.engine.begin() as conn:
        # Another user (not in the published set) gains a NULL distance limit.
        conn.execute(sa.text("UPDATE users SET max_distance_km = NULL WHERE id = 999999"))
        changed = population_store.changed_since(conn, guard)
    assert changed.size == 0
    with db.engine.begin() as conn:
        _, written = scores.replace_user_sets(
            conn,
            output.user_ids,
            output.frame,
            version=settings.version,
            computed_at=NOW,
            guard=guard,
        )
    assert written == len(output.frame) > 0
    assert missing_limit in {u for u, _ in stored_pairs(db)}


def test_a_user_the_snapshot_never_saw_counts_as_changed(db: Any, load_source: Any) -> None:
    load_source(users=[(1,), (2,)])
    with db.engine.connect() as conn:
        guard = population_store.filter_snapshot(conn)
    load_source(users=[(3,)])
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET latitude = 48.1 WHERE id = 2"))
        changed = population_store.changed_since(conn, guard, np.array([1, 2, 3]))
    assert changed.tolist() == [2, 3]


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        (dt.date(1992, 11, 1), 34),  # the 34th birthday is today
        (dt.date(1992, 11, 2), 33),  # tomorrow
        (dt.date(1992, 10, 31), 34),
        (dt.date(2008, 2, 29), 18),  # leap-day birth, in a common year: turned 18 on 1 March
    ],
)
def test_age_is_the_calendar_age(db: Any, load_source: Any, birth: dt.date, expected: int) -> None:
    """Regression: ``days / 365.25`` made someone turning 34 today still 33.99 (and so inside
    an ``age_max: 33`` limit on their birthday), and the reverse error near leap days."""
    load_source(users=[{"id": 1, "birth_date": birth}])
    with db.engine.connect() as conn:
        loaded = population_store.load(conn, NOW, population_store.LoadParams(100.0)).population
    assert loaded.age.tolist() == [expected]


def test_leap_day_birth_turns_older_on_the_first_of_march(db: Any, load_source: Any) -> None:
    load_source(users=[{"id": 1, "birth_date": dt.date(2008, 2, 29)}])
    params = population_store.LoadParams(100.0)
    ages = []
    for day in (
        dt.datetime(2026, 2, 28, 23, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    ):
        with db.engine.connect() as conn:
            ages.append(population_store.load(conn, day, params).population.age.tolist())
    assert ages == [[17], [18]]


# ------------------------------------------------------------------ the nightly, for real


def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_block_made_during_the_nightly_is_not_served_after_its_swap(
    pg_db: Any, seed_with_signals: Any, tmp_path: Path
) -> None:
    """The issue's scenario on PostgreSQL, with a real `matchjobs run match` process: the app's
    block (and a deactivation) is written in a transaction opened before the nightly starts
    and committed once the nightly has loaded and is staging its rows; the swap must not
    publish the pair, in either direction, nor anything of the deactivated user."""
    db = pg_db
    config = seed_with_signals(db, 200, 5, NOW, small_config())
    config_file = tmp_path / "small.yaml"
    config_file.write_text(
        "scoring:\n  top_k: 20\naudit:\n  sample_users: 10\nray:\n  enabled: false\n"
        "  shard_size: 60\n"
    )
    command = [
        sys.executable,
        "-m",
        "jobs",
        "--db",
        db.url,
        "--config",
        str(config_file),
        "run",
        "match",
        "--trigger",
        "nightly",
    ]
    env = {**os.environ, "MATCHJOBS_DATABASE_URL": db.url}
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    with db.engine.connect() as conn:
        served = scores.read_rows(conn, config.algorithm_version)
    top = served.sort_values("score", ascending=False).iloc[0]
    blocker, blocked = int(top["user_id"]), int(top["candidate_id"])
    leaver = int(served.loc[~served["user_id"].isin([blocker, blocked]), "user_id"].iloc[0])

    app = db.engine.connect()
    app_txn = app.begin()
    app.execute(
        sa.text(
            "INSERT INTO likes (user_id, target_id, kind, created_at) "
            "VALUES (:a, :b, 'block', CURRENT_TIMESTAMP)"
        ),
        {"a": blocker, "b": blocked},
    )
    app.execute(sa.text("UPDATE users SET is_active = false WHERE id = :u"), {"u": leaver})
    nightly = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        def staging() -> bool:
            with db.engine.connect() as conn:
                return bool(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_tables "
                            "WHERE tablename LIKE 'match_scores_stage_%'"
                        )
                    ).scalar_one()
                )

        _wait_for(staging, 240, "the nightly to create its stage")
        app_txn.commit()  # the block lands after the load, before the swap
        app.close()
        _, err = nightly.communicate(timeout=300)
    finally:
        if nightly.poll() is None:
            nightly.kill()
    assert nightly.returncode == 0, err
    pairs = stored_pairs(db, config.algorithm_version)
    assert (blocker, blocked) not in pairs and (blocked, blocker) not in pairs
    assert not involving(pairs, leaver)
    with db.engine.connect() as conn:
        metadata = conn.execute(
            sa.text(
                "SELECT metadata FROM job_runs WHERE job_name = 'match' ORDER BY id DESC LIMIT 1"
            )
        ).scalar_one()
    figures = metadata if isinstance(metadata, dict) else json.loads(metadata)
    purged = figures["purged_at_swap"]
    assert purged["rows_excluded"] >= 1 and purged["rows_changed_user"] >= 1


def test_two_writers_of_one_user_queue_instead_of_colliding(db: Any, load_source: Any) -> None:
    """Regression (issue 9.4): two workers rewriting the same user (overlapping reverse
    fan-out) made the second fail with a UniqueViolation: both deleted the old set, the first
    committed its new one, the second's insert then hit it. Now the second waits for the
    first and replaces its rows."""
    import threading

    if not db.is_postgres:
        pytest.skip("SQLite serializes writers with its database lock; nothing to collide")
    load_source(users=[(1,), {"id": 2, "gender": 1, "seeking_mask": 1}])
    with db.engine.connect() as conn:
        guard = population_store.filter_snapshot(conn)

    def frame(score: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": [1],
                "candidate_id": [2],
                "score": [score],
                **{c: [0.5] for c in scores.SUBSCORE_COLUMNS},
                "reasons": ["[]"],
            }
        )

    def replace(conn: Any, score: float) -> None:
        scores.replace_user_sets(
            conn, [1], frame(score), version="v1", computed_at=NOW, guard=guard
        )

    with db.engine.begin() as conn:
        replace(conn, 0.1)
    errors: list[BaseException] = []
    first = db.engine.connect()
    first_txn = first.begin()
    replace(first, 0.2)  # holds user 1's set, uncommitted

    def second() -> None:
        try:
            with db.engine.begin() as conn:
                replace(conn, 0.3)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()

    def second_waits() -> bool:
        with db.engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
            )

    _wait_for(second_waits, 30, "the second writer to wait")
    first_txn.commit()
    first.close()
    thread.join(timeout=30)
    assert errors == []
    with db.engine.connect() as conn:
        rows = scores.read_rows(conn, "v1")
    assert rows["score"].tolist() == [float(np.float32(0.3))]  # stored as float4
