"""A shard's write that loses its database connection is retried; exhausted retries fail
cleanly.

Regression (issue 9, item 5): a connection cut mid-COPY failed the whole nightly (safely:
old version served, stage dropped) without a retry of the shard, printed a raw
``RayTaskError`` traceback, and left ANSI escape codes in ``job_runs.error``.

The cut is real: the actors reach PostgreSQL through a TCP proxy on loopback
(``jobs.tools.faults.proxy``) that closes a connection at a chosen point of the COPY
transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from jobs import cli, runner
from jobs import config as config_mod
from jobs.context import Scope
from jobs.storage import ledger, scores
from jobs.tools.faults import proxy as proxy_mod

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
OVERRIDES: dict[str, dict[str, Any]] = {
    "candidates": {"quiz_k": 30, "interest_k": 30, "fallback_k": 30},
    "scoring": {"top_k": 12},
    "audit": {"sample_users": 20},
    "ray": {"enabled": True, "shard_size": 60, "num_actors": 2, "num_cpus_per_actor": 0.5},
    "retry": {"write_attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.2},
}

pytestmark = pytest.mark.ray


def make_config(**sections: dict[str, Any]) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    for name, values in {**OVERRIDES, **sections}.items():
        data[name] = {**data[name], **values}
    return config_mod.from_mapping(data, source="test")


def run_match(db: Any, url: str, config: config_mod.Config) -> Any:
    return runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: NOW,
    )


def stored(db: Any) -> pd.DataFrame:
    with db.engine.connect() as conn:
        return scores.read_rows(conn, "v1").drop(columns="computed_at")


def last_run(db: Any) -> tuple[Any, dict[str, Any]]:
    row = ledger.recent_runs(db.engine, limit=1, job_name="match").iloc[0]
    return row, json.loads(row["metadata"])


@pytest.fixture
def world(pg_db: Any, seed_with_signals: Any) -> Any:
    seed_with_signals(pg_db, 200, 11, NOW)
    return pg_db


def proxy_for(db: Any, at: str, cuts: int) -> proxy_mod.CuttingProxy:
    return proxy_mod.for_url(db.url, at, cuts)


@pytest.mark.parametrize("at", ["copy", "commit"])
def test_a_cut_write_is_retried_and_the_rows_equal_a_clean_run(
    world: Any, ray_cluster: None, at: str
) -> None:
    # "commit" pins the rewrite: the first attempt's rows are in the stage, and a retry
    # that appended again would make the swap's primary key fail on duplicates.
    run_match(world, world.url, make_config())
    clean = stored(world)
    proxy = proxy_for(world, at, cuts=1)
    try:
        run_match(world, proxy.url(sa.engine.make_url(world.url).database), make_config())
    finally:
        proxy.close()
    assert proxy.cuts_made == 1
    row, meta = last_run(world)
    assert row["status"] == "succeeded"
    assert meta["shards"]["write_retries"] == 1
    assert meta["funnel"]["rows_written"] == len(clean)
    pd.testing.assert_frame_equal(stored(world), clean)


def test_exhausted_retries_fail_cleanly_with_one_plain_line(
    world: Any, ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_match(world, world.url, make_config())
    before = stored(world)
    proxy = proxy_for(world, "copy", cuts=-1)  # every COPY is cut
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(OVERRIDES))
    database = sa.engine.make_url(world.url).database
    capsys.readouterr()
    try:
        code = cli.main(["--db", proxy.url(database), "--config", str(config_file), "run", "match"])
    finally:
        proxy.close()
    assert code == 1
    assert proxy.cuts_made >= OVERRIDES["retry"]["write_attempts"]
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("matchjobs: error: StorageError: write of shard")
    assert "after 3 attempts" in lines[0]
    assert "\x1b" not in lines[0] and "Traceback" not in lines[0]
    row, _ = last_run(world)
    assert row["status"] == "failed"
    error = row["error"]
    assert "\x1b" not in error and "ray::" not in error and "Traceback" not in error
    # The chain survives the trip from the actor: down to the driver's own words.
    assert error.splitlines()[0].startswith("StorageError: write of shard")
    assert "caused by StorageError: write" in error
    assert "caused by OperationalError:" in error
    # Old version still served, stage dropped.
    pd.testing.assert_frame_equal(stored(world), before)
    with world.engine.connect() as conn:
        stages = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%stage%'")
        ).scalar_one()
    assert stages == 0
