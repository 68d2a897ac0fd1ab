"""A bad config stops the CLI before it writes anything, with the key named on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.config import DEFAULT_CONFIG
from jobs.storage.schema import job_runs


@pytest.mark.parametrize(
    ("yaml_text", "command", "expected"),
    [
        (
            "weights:\n  proximity: -1\n",
            "quiz",
            "weights.proximity: Input should be greater than or equal to 0",
        ),
        # issue 9, item 6: these two passed validation and crashed the job with a traceback
        ("weights:\n  quiz: .inf\n", "match", "weights.quiz: Input should be a finite number"),
        (
            "ratings:\n  prior_weight: .inf\n",
            "ratings",
            "ratings.prior_weight: Input should be a finite number",
        ),
    ],
)
def test_bad_config_stops_before_any_write(
    db,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    yaml_text: str,
    command: str,
    expected: str,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    code = cli.main(["--db", db.url, "--config", str(bad), "run", command])
    assert code == 1
    err = capsys.readouterr().err
    assert f"ConfigError: {DEFAULT_CONFIG} + {bad}: {expected}" in err
    assert "Traceback" not in err
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(job_runs)).scalar_one() == 0


def test_empty_database_env_var_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MATCHJOBS_DATABASE_URL", " ")
    assert cli.main(["runs"]) == 1
    assert "MATCHJOBS_DATABASE_URL is set but empty" in capsys.readouterr().err
