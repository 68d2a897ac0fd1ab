"""A nightly match output that leaves most users without a list is not called a success.

Regression (issue 9, item 7): a run that wrote 0 rows for 59,850 of 59,850 users finished
``succeeded``, logged at INFO, with a recall@200 of 1.0, and was swapped in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from jobs import cli, runner
from jobs import config as config_mod
from jobs.context import Scope
from jobs.errors import LowCoverageError
from jobs.storage import ledger, scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SMALL = {
    "candidates": {"quiz_k": 30, "interest_k": 30, "fallback_k": 30},
    "scoring": {"top_k": 12},
    "ray": {"enabled": False, "shard_size": 70},
    "audit": {"sample_users": 30},
}


def make_config(**audit: Any) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    for name, values in SMALL.items():
        data[name] = {**data[name], **values}
    data["audit"].update(audit)
    return config_mod.from_mapping(data, source="test")


def run_match(db: Any, config: config_mod.Config, *, force_swap: bool = False) -> Any:
    return runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: NOW,
        force_swap=force_swap,
    )


def last_run(db: Any) -> Any:
    row = ledger.recent_runs(db.engine, limit=1, job_name="match").iloc[0]
    return row, json.loads(row["metadata"])


def stored(db: Any) -> pd.DataFrame:
    with db.engine.connect() as conn:
        return scores.read_rows(conn, "v1")


def nobody_can_match(db: Any) -> None:
    """Every user a woman seeking men: every pair fails the gender filter (valid rows)."""
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET gender = 0, seeking_mask = 2"))


@pytest.fixture
def world(db: Any, seed_with_signals: Any) -> Any:
    seed_with_signals(db, 200, 11, NOW)
    return db


def write_config(tmp_path: Path, **audit: Any) -> str:
    path = tmp_path / "exp.yaml"
    overrides = {name: dict(values) for name, values in SMALL.items()}
    overrides["audit"].update(audit)
    path.write_text(yaml.safe_dump(overrides))
    return str(path)


def test_low_coverage_fails_the_run_and_keeps_the_old_lists(
    world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, result = run_match(world, make_config())
    before = stored(world)
    row, meta = last_run(world)
    assert row["status"] == "succeeded" and not result.warnings
    assert meta["coverage"]["coverage"] >= 0.5 and meta["recall_audit"]["recall_at_k"] > 0.9
    nobody_can_match(world)
    with caplog.at_level(logging.WARNING), pytest.raises(LowCoverageError) as raised:
        run_match(world, make_config())
    row, meta = last_run(world)
    active = meta["coverage"]["active_users"]
    assert row["status"] == "failed" and active > 150
    assert f"gives 0 of {active} active users a list (coverage 0.0%)" in row["error"]
    assert "min_coverage 50.0%" in str(raised.value)
    assert meta["coverage"] == {
        "active_users": active,
        "users_with_list": 0,
        "coverage": 0.0,
        "min_coverage": 0.5,
        "published": "refused",
    }
    warned = [r for r in caplog.records if getattr(r, "action", "") == "match.coverage"]
    assert warned and warned[0].levelno == logging.WARNING
    if world.is_postgres:
        # The stage was dropped, not swapped in: readers still get yesterday's lists.
        pd.testing.assert_frame_equal(stored(world), before)
        with world.engine.connect() as conn:
            stages = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%stage%'")
            ).scalar_one()
        assert stages == 0


def test_warn_mode_ends_succeeded_with_warnings_and_the_cli_shows_it(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_match(world, make_config())
    before = stored(world)
    nobody_can_match(world)
    _, result = run_match(world, make_config(on_low_coverage="warn"))
    row, meta = last_run(world)
    assert row["status"] == "succeeded_with_warnings"
    assert result.warnings and "coverage 0.0%" in result.warnings[0]
    assert row["error"].startswith("warning: the match output gives 0 of ")
    assert meta["warnings"] == list(result.warnings)
    if world.is_postgres:
        pd.testing.assert_frame_equal(stored(world), before)
    capsys.readouterr()
    assert cli.main(["--db", world.url, "runs", "--job", "match"]) == 0
    assert "succeeded_with_warnings" in capsys.readouterr().out
    assert cli.main(["--db", world.url, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["jobs"]["match"]
    assert status["last_status"] == "succeeded_with_warnings"
    assert status["recent_warnings"] == 1 and "coverage 0.0%" in status["last_warning"]


def test_force_swap_publishes_and_the_audit_has_no_sample(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody_can_match(world)
    argv = ["--db", world.url, "--config", write_config(tmp_path), "run", "match"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "LowCoverageError" in err and "--force-swap" in err
    assert cli.main([*argv, "--force-swap"]) == 0
    assert "1 warnings" in capsys.readouterr().out
    row, meta = last_run(world)
    assert row["status"] == "succeeded_with_warnings"
    assert meta["coverage"]["published"] == "forced"
    assert stored(world).empty
    # Nothing to compare is not a recall of 1.0.
    audit = meta["recall_audit"]
    assert audit["recall_at_k"] is None and audit["exhaustive_candidates"] == 0
    assert audit["reason"].startswith("no sample")


def test_force_swap_is_refused_for_jobs_that_do_not_swap(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--db", db.url, "run", "quiz", "--force-swap"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "matchjobs: error: ConfigError: --force-swap applies to `run match` and "
        "`run nightly` over all users; got `run quiz`"
    ]


def test_a_recall_audit_below_the_floor_ends_succeeded_with_warnings(world: Any) -> None:
    """audit.min_recall: exact ranking (the default) passes it; FAISS neighbour lists of two
    quiz and two interest neighbours each, for everyone (candidates.exact_below 2), miss
    pairs the exhaustive audit ranks in the top 4, and the run says so instead of calling it
    a plain success."""
    run_match(world, make_config())
    row, meta = last_run(world)
    assert row["status"] == "succeeded" and meta["recall_audit"]["recall_at_k"] == 1.0
    data = make_config().model_dump()
    data["candidates"].update(exact_below=2, quiz_k=2, interest_k=2, fallback_k=2)
    data["scoring"]["top_k"] = 4
    data["algorithm_version"] = "v1-faiss"
    _, result = run_match(world, config_mod.from_mapping(data, source="test"))
    row, meta = last_run(world)
    recall = meta["recall_audit"]["recall_at_k"]
    assert recall is not None and recall < 0.98
    assert row["status"] == "succeeded_with_warnings"
    assert any(
        f"recall@4 audit {recall:.4f} is below audit.min_recall 0.98" in w for w in result.warnings
    )
