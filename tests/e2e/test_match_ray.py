"""The nightly match run through Ray: same rows as in-process, and a killed actor is retried."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jobs import config as config_mod
from jobs import runner
from jobs.context import JobContext, JobResult, Scope
from jobs.match import core as match
from jobs.match import nightly as match_nightly
from jobs.storage import ledger, scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

pytestmark = pytest.mark.ray


def make_config(ray_enabled: bool) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    data["candidates"] = {**data["candidates"], "quiz_k": 30, "interest_k": 30, "fallback_k": 30}
    data["scoring"] = {**data["scoring"], "top_k": 12}
    data["audit"] = {**data["audit"], "sample_users": 30}
    data["ray"] = {
        **data["ray"],
        "enabled": ray_enabled,
        "shard_size": 60,
        "num_actors": 2,
        "num_cpus_per_actor": 0.5,
        "max_retries": 2,
    }
    return config_mod.from_mapping(data, source="test")


@pytest.fixture
def world(db: Any, seed_with_signals: Any) -> Any:
    seed_with_signals(db, 200, 11, NOW)
    return db


def run_nightly(db: Any, config: config_mod.Config, **kwargs: Any) -> JobResult:
    def job(ctx: JobContext, scope: Scope) -> JobResult:
        return match_nightly.run_nightly(ctx, match.settings_from_config(ctx.config), **kwargs)

    return runner.execute(
        "match",
        job,
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: NOW,
    )[1]


def stored(db: Any) -> pd.DataFrame:
    with db.engine.connect() as conn:
        return scores.read_rows(conn, "v1")


def last_metadata(db: Any) -> dict[str, Any]:
    import json

    frame = ledger.recent_runs(db.engine, limit=1, job_name="match")
    return dict(json.loads(frame["metadata"].iloc[0]))


def test_ray_nightly_equals_the_in_process_nightly(
    world: Any, ray_cluster: None, capfd: pytest.CaptureFixture[str]
) -> None:
    run_nightly(world, make_config(ray_enabled=False))
    in_process = stored(world)
    capfd.readouterr()
    result = run_nightly(world, make_config(ray_enabled=True))
    # Regression: every nightly printed Ray's E-line about restartable actors built from
    # objects in the store; the actors now take their arguments by reference at each call.
    assert "constructor arguments in the object store" not in capfd.readouterr().err
    through_ray = stored(world)
    assert len(in_process) > 300
    pd.testing.assert_frame_equal(in_process, through_ray)
    meta = last_metadata(world)
    assert meta["shards"]["executor"] == "ray" and meta["shards"]["count"] == 4
    assert meta["shards"]["started_ray"] is False  # reused the session's Ray
    assert result.rows_written == len(through_ray)
    assert meta["funnel"]["rows_written"] == len(through_ray)


def test_a_killed_actor_is_restarted_and_its_shard_rewritten_once(
    world: Any, ray_cluster: None, tmp_path: Path
) -> None:
    run_nightly(world, make_config(ray_enabled=False))
    clean = stored(world)
    with world.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM match_scores")
    marker = tmp_path / "crashed"
    run_nightly(world, make_config(ray_enabled=True), crash_marker=str(marker), crash_shard=1)
    assert marker.exists()  # the actor really died on its first call for shard 1
    pd.testing.assert_frame_equal(clean, stored(world))
    assert last_metadata(world)["shards"]["actor_restarts"] >= 1


def test_shard_scorer_is_a_plain_class(world: Any) -> None:
    config = make_config(ray_enabled=False)
    settings = match.settings_from_config(config)

    class Ctx:
        pass

    from compute.population import clean_population
    from jobs.storage import population as population_store

    with world.engine.connect() as conn:
        guard = population_store.filter_snapshot(conn)
        pop = clean_population(population_store.load(conn, NOW, settings.load).population)[0]
    indexes = match.build_indexes(pop, settings)
    scorer = match_nightly.ShardScorer(
        pop, indexes.to_bytes(), settings, world.url, NOW, guard=guard
    )
    rows = match_nightly.shard_rows(np.arange(pop.n_users), 60)[0]
    figures = scorer.score_shard(0, rows)
    scorer.close()
    written = stored(world)
    assert figures["funnel"]["rows_written"] == len(written) > 0
    assert set(written["user_id"]) <= set(pop.user_ids[rows].tolist())
