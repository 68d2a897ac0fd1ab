"""What the CLI prints for machines: ``runs --json`` holds objects, not JSON in strings."""

from __future__ import annotations

import json

import pytest

from jobs import cli


def test_runs_json_gives_metadata_as_an_object(db, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: `matchjobs runs --json` returned each run's metadata as a JSON string."""
    assert cli.main(["--db", db.url, "run", "quiz"]) == 0
    capsys.readouterr()
    assert cli.main(["runs", "--json", "--db", db.url]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["job_name"] for r in runs] == ["quiz"]
    assert isinstance(runs[0]["metadata"], dict)
    assert set(runs[0]["metadata"]["phases_s"]) == {"load", "compute", "write"}
