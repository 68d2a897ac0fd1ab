"""A bad config stops the CLI before it writes anything, with the key named on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.storage.schema import job_runs


def test_bad_config_stops_before_any_write(
    db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("weights:\n  proximity: -1\n")
    code = cli.main(["--db", db.url, "--config", str(bad), "run", "quiz"])
    assert code == 1
    err = capsys.readouterr().err
    assert "weights.proximity: Input should be greater than or equal to 0" in err
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar_one() == 0


def test_empty_database_env_var_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MATCHJOBS_DATABASE_URL", " ")
    assert cli.main(["runs"]) == 1
    assert "MATCHJOBS_DATABASE_URL is set but empty" in capsys.readouterr().err
