"""Quiz job: hand-checked vectors, skipped rows counted, single user = batch, idempotent reruns."""

from __future__ import annotations

import datetime as dt
import json

import factories
import numpy as np
import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs.context import Scope
from jobs.storage import schema, signals

T1 = factories.T0 + dt.timedelta(hours=1)
T2 = factories.T0 + dt.timedelta(hours=2)
SQRT5 = np.sqrt(5.0)


@pytest.fixture
def quiz_config(default_config) -> config_mod.Config:
    return config_mod.from_mapping({**default_config.model_dump(), "quiz": {"min_answers": 2}})


@pytest.fixture
def quiz_world(load_source) -> None:
    """Six users; by hand, with mid = 3, half = 2 on 1-5 and mid = 5, half = 5 on 0-10.

    user 1: q10=5 → +1, q11=1 → 2·(-1) = -2, q12=5 → 0        → (1, -2, 0)/√5
    user 2: q10=4 → 0.5, q12=10 → 1; q11=7 out of scale       → (0.5, 0, 1)/√1.25 = (1, 0, 2)/√5
    user 3: q10=3, q11=3: every answer at the midpoint        → zero_vector, no row
    user 4: q10=5; q11 NULL (nan_value)                       → 1 valid answer: too_few_answers
    user 5: inactive                                          → no row, rows not counted
    user 6: q10=NaN (nan_value), q11=5 → 2, q12=10 → 1        → (0, 2, 1)/√5
    user 1 also answers the inactive q13 and the unknown q99  → inactive_question (ignored,
                                                                and no warning), unknown_question
    """
    load_source(
        users=[(1,), (2,), (3,), (4,), {"id": 5, "is_active": False}, (6,)],
        quiz_questions=[
            (10, 1.0, 5.0, 1.0),
            (11, 1.0, 5.0, 2.0),
            (12, 0.0, 10.0, 1.0),
            {"id": 13, "is_active": False},
        ],
        quiz_answers=[
            (1, 10, 5.0),
            (1, 11, 1.0),
            (1, 12, 5.0),
            (1, 13, 4.0),
            (1, 99, 4.0),
            (2, 10, 4.0),
            (2, 11, 7.0),
            (2, 12, 10.0),
            (3, 10, 3.0),
            (3, 11, 3.0),
            (4, 10, 5.0),
            (4, 11, None),
            (5, 10, 5.0),
            (5, 11, 5.0),
            # NaN is stored as NULL; inf is refused by the schema (ck_quiz_answers_value_finite)
            (6, 10, float("nan")),
            (6, 11, 5.0),
            (6, 12, 10.0),
        ],
    )


def stored_vectors(db) -> dict[int, tuple[np.ndarray, int, int]]:
    with db.engine.connect() as conn:
        frame = signals.read(conn, schema.user_quiz_vectors)
    vectors = signals.bytes_to_vectors(frame["vector"], 3) if len(frame) else np.zeros((0, 3))
    return {
        int(u): (vectors[i], int(frame["dim"][i]), int(frame["n_answers"][i]))
        for i, u in enumerate(frame["user_id"])
    }


def run_metadata(db, run_id: int) -> dict:
    with db.engine.connect() as conn:
        text = conn.execute(
            sa.select(schema.job_runs.c.metadata).where(schema.job_runs.c.id == run_id)
        ).scalar_one()
    return json.loads(text)


def test_vectors_by_hand_and_bad_rows_counted(db, quiz_world, quiz_config, run_signal_job) -> None:
    run_id, result = run_signal_job("quiz", config=quiz_config)

    stored = stored_vectors(db)
    assert sorted(stored) == [1, 2, 6]
    expected = {
        1: ([1 / SQRT5, -2 / SQRT5, 0.0], 3),
        2: ([1 / SQRT5, 0.0, 2 / SQRT5], 2),
        6: ([0.0, 2 / SQRT5, 1 / SQRT5], 2),
    }
    for user, (vector, n_answers) in expected.items():
        got, dim, n = stored[user]
        np.testing.assert_allclose(got, vector, rtol=0, atol=1e-7)
        assert (dim, n) == (3, n_answers)
        assert np.all(np.isfinite(got))
    skipped = {
        "nan_value": 2,
        "unknown_question": 1,
        "out_of_scale": 1,
        # (user, question) is the primary key, so the database never holds a duplicate.
        "duplicate_answer": 0,
        "too_few_answers": 1,
        "zero_vector": 1,
    }
    assert result.skipped == skipped
    assert result.users == 5
    assert result.rows_written == 3
    meta = run_metadata(db, run_id)
    assert meta["skipped"] == skipped
    # Regression: answers to retired questions were skipped as unknown_question, with a
    # warning on every run of the seeded data.
    assert meta["ignored"] == {"inactive_question": 1}
    assert meta["writes"]["user_quiz_vectors"] == {
        "inserted": 3,
        "updated": 0,
        "deleted": 0,
        "unchanged": 0,
    }
    assert set(meta["phases_s"]) == {"load", "compute", "write"}
    assert meta["users"] == 5 and meta["rows_read"] == 4 + 15


def test_single_user_equals_batch(db, quiz_world, quiz_config, run_signal_job) -> None:
    run_signal_job("quiz", config=quiz_config)
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(schema.quiz_answers)
            .where(schema.quiz_answers.c.user_id == 1, schema.quiz_answers.c.question_id == 12)
            .values(value=8.0)
        )
    _, single = run_signal_job("quiz", Scope.users(1), now=T1, config=quiz_config)
    assert single.rows_written == 1 and single.users == 1
    after_single = factories.rows_of(db.engine, schema.user_quiz_vectors)

    _, batch = run_signal_job("quiz", now=T2, config=quiz_config)

    # The batch finds nothing to change: user 1's row (updated_at T1 included) is what it computes.
    assert batch.rows_written == 0
    assert factories.rows_of(db.engine, schema.user_quiz_vectors) == after_single
    (row,) = [r for r in after_single if r[0] == 1]
    assert row[-1] == T1


def test_rerun_is_byte_identical_and_only_quiz_table_written(
    db, quiz_world, quiz_config, run_signal_job
) -> None:
    before = factories.snapshot(db.engine)
    run_signal_job("quiz", config=quiz_config)
    first = factories.snapshot(db.engine)
    changed = {name for name in before if before[name] != first[name]}
    assert changed == {"user_quiz_vectors"}

    _, again = run_signal_job("quiz", now=T1, config=quiz_config)
    _, single = run_signal_job("quiz", Scope.users(1, 2, 3), now=T2, config=quiz_config)

    assert factories.snapshot(db.engine) == first
    assert again.rows_written == 0 and single.rows_written == 0
    assert again.extra["writes"]["user_quiz_vectors"]["unchanged"] == 3


def test_inactive_and_deleted_users_lose_their_rows(
    db, quiz_world, quiz_config, run_signal_job
) -> None:
    run_signal_job("quiz", config=quiz_config)
    with db.engine.begin() as conn:
        conn.execute(sa.update(schema.users).where(schema.users.c.id == 2).values(is_active=False))
        conn.execute(sa.update(schema.users).where(schema.users.c.id == 6).values(is_active=False))
        conn.execute(sa.delete(schema.quiz_answers).where(schema.quiz_answers.c.user_id == 1))
        conn.execute(sa.delete(schema.users).where(schema.users.c.id == 1))

    _, single = run_signal_job("quiz", Scope.users(2), now=T1, config=quiz_config)
    assert sorted(stored_vectors(db)) == [1, 6]
    assert single.extra["writes"]["user_quiz_vectors"]["deleted"] == 1

    _, batch = run_signal_job("quiz", now=T2, config=quiz_config)
    assert stored_vectors(db) == {}
    assert batch.extra["writes"]["user_quiz_vectors"]["deleted"] == 2


def test_user_without_answers_gets_no_row_and_min_answers_applies(
    db, quiz_world, default_config, run_signal_job
) -> None:
    # The default minimum (5) is above every user's answer count here.
    _, result = run_signal_job("quiz")
    assert stored_vectors(db) == {}
    assert result.skipped["too_few_answers"] == 5
