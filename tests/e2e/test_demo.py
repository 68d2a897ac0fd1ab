"""The README's main command, end to end at a small size: seed → nightly on Ray → suggestions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs import cli


def test_demo_runs_end_to_end_on_sqlite(
    ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert cli.main(["--db", url, "demo", "--users", "400", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "seeded 400 users" in out
    assert "suggestions for user" in out
    assert "where to look next" in out
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(sa.text("SELECT job_name, status FROM job_runs WHERE scope = 'all'")).all()
        )
        rows = conn.execute(sa.text("SELECT COUNT(*) FROM match_scores")).scalar_one()
        reasons = conn.execute(
            sa.text(
                "SELECT p.reasons FROM match_scores m JOIN reason_patterns p "
                "ON p.id = m.reason_id LIMIT 1"
            )
        ).scalar_one()
    engine.dispose()
    assert statuses == {
        job: "succeeded"
        for job in ("nightly", "quiz", "interests", "ratings", "likes", "match", "feed")
    }
    assert rows > 0
    assert json.loads(reasons)[0]["text"]
    # the demo's "look next" commands work on what it wrote
    assert cli.main(["--db", url, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["coverage"]["coverage"] > 0.8
