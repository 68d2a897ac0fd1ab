"""suggestions is exactly the API read; status reports coverage, staleness and the queue."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.storage import bulk, schema
from jobs.storage import events as event_store
from jobs.storage import scores as score_store

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
API_SQL = (  # the README's API query
    "SELECT t.candidate_id, CAST(t.score AS FLOAT) AS score, p.reasons "
    "FROM (SELECT candidate_id, score, reason_id FROM match_scores "
    "WHERE algorithm_version = :v AND user_id = :u "
    "ORDER BY score DESC, candidate_id LIMIT :n) AS t "
    "JOIN reason_patterns p ON p.id = t.reason_id ORDER BY t.score DESC, t.candidate_id"
)


def insert_scores(db, version: str, user: int, scores: dict[int, float]) -> None:
    frame = pd.DataFrame(
        {
            "algorithm_version": version,
            "user_id": user,
            "candidate_id": list(scores),
            "score": list(scores.values()),
            **{f"s_{n}": 0.5 for n in schema.SUBSCORE_COLUMNS},
            "reasons": [
                json.dumps([{"code": "nearby", "params": {"km": c}, "text": f"About {c} km away"}])
                for c in scores
            ],
        }
    )
    with db.engine.begin() as conn:
        score_store.insert_rows(
            conn, frame[list(score_store.FRAME_COLUMNS)], version=version, computed_at=T0
        )


def test_suggestions_equal_the_api_query_in_order(db, capsys: pytest.CaptureFixture[str]) -> None:
    insert_scores(db, "v1", 1, {10: 0.4, 11: 0.9, 12: 0.7, 13: 0.8})
    insert_scores(db, "v2", 1, {14: 0.99})  # another version is not shown
    insert_scores(db, "v1", 2, {1: 0.95})  # another user is not shown
    assert cli.main(["--db", db.url, "suggestions", "1", "--limit", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with db.engine.connect() as conn:
        api_rows = conn.execute(sa.text(API_SQL), {"v": "v1", "u": 1, "n": 3}).all()
    assert [(s["candidate_id"], s["score"]) for s in out["suggestions"]] == [
        (r.candidate_id, r.score) for r in api_rows
    ]
    assert [s["candidate_id"] for s in out["suggestions"]] == [11, 13, 12]
    assert out["suggestions"][0]["reasons"][0]["text"] == "About 11 km away"
    assert set(out["suggestions"][0]["subscores"]) == set(schema.SUBSCORE_COLUMNS)
    # the table form shows the same order and the reasons in words
    assert cli.main(["--db", db.url, "suggestions", "1", "--limit", "3"]) == 0
    table = capsys.readouterr().out
    assert table.index("11") < table.index("13") and "About 12 km away" in table


def test_status_reports_coverage_staleness_and_queue(
    db, capsys: pytest.CaptureFixture[str]
) -> None:
    users = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "seeking_mask": 2,
            "created_at": pd.Series([T0] * 4, dtype="datetime64[us, UTC]"),
            "is_active": [True, True, True, False],
        }
    )
    with db.engine.begin() as conn:
        bulk.insert_frame(conn, schema.users, users)
    insert_scores(db, "v1", 1, {2: 0.5})
    insert_scores(db, "v1", 4, {2: 0.5})  # inactive user: not counted as covered
    event_store.enqueue(db.engine, "quiz_submitted", 1, T0)
    assert cli.main(["--db", db.url, "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["coverage"]["active_users"] == 3
    assert data["coverage"]["users_with_scores"] == 1
    assert data["coverage"]["coverage"] == pytest.approx(1 / 3)
    assert data["coverage"]["staleness_hours"] > 24
    assert data["queue"]["pending"] == 1
    assert cli.main(["--db", db.url, "status"]) == 0
    assert "1/3 active users have suggestions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quiz_submitted", "-7"], "EventError: event user_id must be a positive user id; got -7"),
        (["quiz_submitted", "99"], "EventError: event user_id 99: no such user"),
        (["rating_created", "1"], "EventError: a rating_created event needs other_user_id"),
        (["rating_created", "1", "--other", "98"], "EventError: event other_user_id 98: no such"),
    ],
)
def test_event_refuses_invalid_ids_in_one_line(
    db, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Regression: `matchjobs event quiz_submitted -7` was queued; its batch then failed."""
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.users), [{"id": 1, "seeking_mask": 2, "created_at": T0}])
    assert cli.main(["--db", db.url, "event", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"matchjobs: error: {message}") and err.count("\n") == 1
    with db.engine.connect() as conn:
        assert event_store.counts_by_status(conn) == {}
    assert cli.main(["--db", db.url, "event", "quiz_submitted", "1"]) == 0
    assert capsys.readouterr().out.startswith("queued event ")


def test_suggestions_piped_into_a_reader_that_stops_early_end_quietly(db) -> None:
    """`matchjobs suggestions --json | head -c 100`: no BrokenPipeError traceback (issue 10)."""
    insert_scores(db, "v1", 1, {c: 1.0 - c / 10_000 for c in range(10, 3_010)})
    command = [
        str(Path(sys.executable).with_name("matchjobs")),
        *("--db", db.url, "suggestions", "1", "--limit", "3000", "--json"),
        *("--version", "v1"),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        head = process.stdout.read(100)
        process.stdout.close()  # the reader goes away with most of the output unread
        err = process.stderr.read().decode()
        status = process.wait(timeout=120)
    assert head.startswith(b"{")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert status == cli.SIGPIPE_STATUS, (status, err)
