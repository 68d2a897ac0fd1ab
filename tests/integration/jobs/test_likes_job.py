"""Likes job: hand-checked rates and vectors, skips counted, reruns byte-identical, own tables."""

from __future__ import annotations

import datetime as dt
import json

import factories
import numpy as np
import pytest

from jobs import config as config_mod
from jobs.context import Scope
from jobs.errors import ScopeError
from jobs.storage import ledger, schema, signals

T1 = factories.T0 + dt.timedelta(hours=1)

# 1 likes everyone, 2 likes no one, 3 and 4 decide alike; 5 is inactive (its decisions
# still count); 6 decided once (too few for a taste vector); 99 does not exist.
LIKES = [
    *((1, t, "like") for t in (10, 11, 12)),
    *((2, t, "pass") for t in (10, 11, 12)),
    (3, 10, "like"),
    (3, 11, "pass"),
    (4, 10, "like"),
    (4, 11, "pass"),
    (5, 12, "like"),
    (5, 10, "like"),
    (6, 10, "pass"),
    (3, 12, "block"),  # not taste: set aside
    (1, 99, "like"),  # unknown_user
]


@pytest.fixture
def likes_config(default_config) -> config_mod.Config:
    return config_mod.from_mapping(
        {
            **default_config.model_dump(),
            "likes": {
                "dim": 3,
                "min_decisions": 2,
                "prior_weight": 2.0,
                "pass_weight": 1.0,
                "regularisation": 0.0,
            },
        }
    )


@pytest.fixture
def likes_world(load_source) -> None:
    users = [(u,) for u in (1, 2, 3, 4, 6, 10, 11, 12)] + [{"id": 5, "is_active": False}]
    load_source(users=users, likes=LIKES)


def stored(db) -> tuple[dict, dict]:
    with db.engine.connect() as conn:
        behaviour = signals.read(conn, schema.user_like_behaviour)
        vectors = signals.read(conn, schema.user_taste_vectors)
    rates = {int(r.user_id): r for r in behaviour.itertuples()}
    taste = {int(r.user_id): r for r in vectors.itertuples()}
    return rates, taste


def test_rates_and_vectors_by_hand(db, likes_world, likes_config, run_signal_job) -> None:
    run_id, result = run_signal_job("likes", config=likes_config)
    rates, taste = stored(db)
    # 13 likes and passes are valid, 7 of them likes: g = 7/13; m = 2.
    g = 7 / 13
    assert result.extra["global_like_rate"] == pytest.approx(g, abs=1e-6)
    assert result.extra["blocks_ignored"] == 1
    assert result.skipped["unknown_user"] == 1
    assert sorted(rates) == [1, 2, 3, 4, 6, 10, 11, 12]  # active users only, 5 withheld
    assert rates[1].rate_given == pytest.approx((3 + 2 * g) / 5)
    assert rates[2].rate_given == pytest.approx((0 + 2 * g) / 5)
    assert rates[10].rate_received == pytest.approx((4 + 2 * g) / 8)
    assert (rates[10].decisions_received, rates[10].likes_received) == (6, 4)
    assert rates[11].rate_given == pytest.approx(g)  # decided nothing: the prior
    # Vectors: who decided alike has the same bits; the last two coordinates carry the
    # rates on the decision scale (pass_weight 1: 2 (rate_given - g/2) - 1/2, then 1).
    assert taste[3].taste == taste[4].taste
    vec = {u: np.frombuffer(taste[u].taste, dtype="<f4") for u in (1, 2, 3)}
    for u in (1, 2, 3):
        assert vec[u][1:] == pytest.approx([2 * (rates[u].rate_given - g / 2) - 0.5, 1.0])
    appeal = np.frombuffer(taste[10].appeal, dtype="<f4")
    assert appeal[1:] == pytest.approx([1.0, 2 * (rates[10].rate_received - g / 2) - 0.5])
    assert 6 not in taste  # one decision given, none received: no row
    assert taste[10].appeal is not None and taste[10].taste is None
    assert all(taste[u].dim == 3 for u in taste)
    assert result.skipped["too_few_decisions_given"] == 4  # 6, 10, 11, 12
    assert result.skipped["too_few_decisions_received"] == 5  # 1, 2, 3, 4, 6
    runs = ledger.recent_runs(db.engine, limit=1, job_name="likes")
    assert json.loads(runs["metadata"].iloc[0])["taste_vectors"] == 4
    assert run_id == int(runs["id"].iloc[0])


def test_rerun_is_byte_identical_and_writes_only_its_own_tables(
    db, likes_world, likes_config, run_signal_job
) -> None:
    before = factories.snapshot(db.engine)
    run_signal_job("likes", config=likes_config)
    after = factories.snapshot(db.engine)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {t.name for t in schema.DERIVED_OWNERS["likes"]}
    _, result = run_signal_job("likes", config=likes_config, now=T1)
    assert factories.snapshot(db.engine) == after
    assert result.rows_written == 0


def test_a_user_that_leaves_loses_its_rows(db, likes_world, likes_config, run_signal_job) -> None:
    run_signal_job("likes", config=likes_config)
    with db.engine.begin() as conn:
        conn.execute(schema.users.update().where(schema.users.c.id == 3).values(is_active=False))
    run_signal_job("likes", config=likes_config, now=T1)
    rates, taste = stored(db)
    assert 3 not in rates and 3 not in taste
    # 3's decisions are still evidence: 10's counts are unchanged.
    assert rates[10].decisions_received == 6


def test_a_user_scope_is_refused_before_anything_is_written(
    db, likes_world, likes_config, run_signal_job
) -> None:
    before = factories.snapshot(db.engine)
    with pytest.raises(ScopeError, match="all users"):
        run_signal_job("likes", Scope.users(1), config=likes_config)
    assert factories.snapshot(db.engine) == before
