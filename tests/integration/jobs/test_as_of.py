"""``--as-of`` pins the time every job computes at, so a rerun writes byte-identical rows.

Regression (issue 11): a rerun of the match job on unchanged data moved scores by up to
3e-7, because newness (and ages) followed the wall clock of each run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import factories
import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.storage import schema
from jobs.tools import seed as seed_mod

AS_OF = "2026-11-02T06:30:00+00:00"


@pytest.fixture
def no_ray(tmp_path: Path) -> str:
    path = tmp_path / "no-ray.yaml"
    path.write_text("ray:\n  enabled: false\n")
    return str(path)


def test_two_match_runs_at_the_same_as_of_write_identical_rows(
    db, no_ray: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.engine.begin() as conn:
        seed_mod.write(conn, seed_mod.generate(80, 3, seed_mod.DEFAULT_NOW))
    base = ["--db", db.url, "--config", no_ray]
    for job in ("quiz", "interests", "ratings", "likes"):
        assert cli.main([*base, "--as-of", AS_OF, "run", job]) == 0
    assert cli.main([*base, "--as-of", AS_OF, "run", "match"]) == 0
    first = factories.rows_of(db.engine, schema.match_scores)
    # The option after the subcommand is the same option.
    assert cli.main([*base, "run", "match", "--as-of", AS_OF]) == 0
    second = factories.rows_of(db.engine, schema.match_scores)
    capsys.readouterr()
    assert len(first) > 0
    assert second == first  # scores exactly equal, and every other column
    at = list(schema.match_scores.columns.keys()).index("computed_at")
    stamps = {row[at] for row in first}
    assert stamps == {dt.datetime.fromisoformat(AS_OF)}
    with db.engine.connect() as conn:
        started = conn.execute(sa.select(sa.func.max(schema.job_runs.c.started_at))).scalar_one()
    # The ledger keeps the wall clock: a pinned past must not look like a dead heartbeat.
    assert started > dt.datetime.fromisoformat(AS_OF)


def test_a_bad_as_of_stops_before_anything_is_written(
    db, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--db", db.url, "--as-of", "yesterday", "run", "quiz"]) == 1
    assert "--as-of must be an ISO 8601 time" in capsys.readouterr().err
    with db.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.job_runs)).scalar_one() == 0
        )
