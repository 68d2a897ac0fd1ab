"""The whole pipeline on a small seeded population: nightly, explain, then an event.

Ray is switched off here (``ray.enabled: false``) so the nightly scores its shards
in-process; the Ray path has its own end-to-end tests in tests/e2e.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from jobs import cli, runner, worker
from jobs import config as config_mod
from jobs.context import Scope
from jobs.storage import events as event_store
from jobs.storage import schema
from jobs.tools import seed as seed_mod


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    override = tmp_path / "no-ray.yaml"
    # Fusion off: the explain test checks that a one-sided score is its contributions' sum.
    override.write_text(
        "ray:\n  enabled: false\naudit:\n  sample_users: 20\n"
        "scoring:\n  reciprocal:\n    enabled: false\n"
    )
    return override


@pytest.fixture
def config(config_file: Path) -> config_mod.Config:
    return config_mod.load_config([config_file])


@pytest.fixture
def nightly_db(db, config):
    with db.engine.begin() as conn:
        seed_mod.write(conn, seed_mod.generate(250, seed=3, now=seed_mod.DEFAULT_NOW))
    runner.execute(
        "nightly",
        runner.job_function("nightly"),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
    )
    return db


def runs(db) -> list[tuple[str, str, str]]:
    j = schema.job_runs
    with db.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.select(j.c.job_name, j.c.status, j.c.trigger).order_by(j.c.id))
        ]


def test_nightly_runs_every_step_and_covers_users(nightly_db, config) -> None:
    names = [name for name, status, _ in runs(nightly_db) if status == "succeeded"]
    for job in ("quiz", "interests", "ratings", "likes", "match", "feed", "nightly"):
        assert job in names
    with nightly_db.engine.connect() as conn:
        n_users = conn.execute(
            sa.text(
                "SELECT COUNT(DISTINCT user_id) FROM match_scores WHERE algorithm_version = :v"
            ),
            {"v": config.algorithm_version},
        ).scalar_one()
        meta = json.loads(
            conn.execute(
                sa.text("SELECT metadata FROM job_runs WHERE job_name = 'nightly'")
            ).scalar_one()
        )
    assert n_users > 150
    assert set(meta["steps"]) >= {"quiz", "interests", "ratings", "likes", "match", "feed"}


def test_explain_agrees_with_the_stored_row_and_names_filters(
    nightly_db, config_file, capsys
) -> None:
    with nightly_db.engine.connect() as conn:
        user, cand, score = conn.execute(
            sa.text(
                "SELECT user_id, candidate_id, score FROM match_scores "
                "ORDER BY user_id, score DESC LIMIT 1"
            )
        ).one()
        seekers = (
            conn.execute(
                sa.text(
                    "SELECT id FROM users WHERE is_active AND gender = 0 AND seeking_mask = 2 "
                    "ORDER BY id LIMIT 2"
                )
            )
            .scalars()
            .all()
        )
    assert (
        cli.main(
            [
                "--db",
                nightly_db.url,
                "--config",
                str(config_file),
                "explain",
                str(user),
                str(cand),
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "listed"
    assert data["stored"]["score"] == pytest.approx(score, abs=1e-6)
    # without reciprocal fusion the score is the sum of the contributions
    assert data["score"] == pytest.approx(sum(s["contribution"] for s in data["signals"]), abs=1e-3)
    assert data["score"] == pytest.approx(score, abs=1e-4)
    # two women who both seek men: the gender filter, in both directions (and perhaps more)
    a, b = seekers
    assert (
        cli.main(
            [
                "--db",
                nightly_db.url,
                "--config",
                str(config_file),
                "explain",
                str(a),
                str(b),
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "filtered"
    assert {(f["filter"], f["direction"]) for f in data["filters"]} >= {
        ("gender", f"{a} -> {b}"),
        ("gender", f"{b} -> {a}"),
    }


def test_quiz_event_refreshes_vector_and_scores(nightly_db, config) -> None:
    db = nightly_db
    with db.engine.connect() as conn:
        user = conn.execute(
            sa.text("SELECT user_id FROM match_scores ORDER BY user_id LIMIT 1")
        ).scalar_one()
        before = conn.execute(
            sa.text("SELECT vector FROM user_quiz_vectors WHERE user_id = :u"), {"u": user}
        ).scalar_one()
    # the user re-takes the quiz with opposite answers
    with db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE quiz_answers SET value = 6 - value WHERE user_id = :u"), {"u": user}
        )
    event_store.enqueue(db.engine, "quiz_submitted", user, runner.utcnow())
    event_store.enqueue(db.engine, "quiz_submitted", user, runner.utcnow())  # a duplicate
    stats = worker.run_worker(db.engine, db.url, config, once=True)
    assert (stats.events_done, stats.events_coalesced, stats.events_failed) == (1, 1, 0)
    with db.engine.connect() as conn:
        after = conn.execute(
            sa.text("SELECT vector FROM user_quiz_vectors WHERE user_id = :u"), {"u": user}
        ).scalar_one()
        statuses = sorted(conn.execute(sa.text("SELECT status FROM events")).scalars())
    assert np.allclose(np.frombuffer(after, "<f4"), -np.frombuffer(before, "<f4"), atol=1e-6)
    assert statuses == ["coalesced", "done"]
    event_runs = [(name, status) for name, status, trigger in runs(db) if trigger == "event"]
    assert event_runs == [
        ("worker", "succeeded"),  # the batch, which holds the events' claim
        ("quiz", "succeeded"),
        ("match", "succeeded"),  # the user's own list
        ("feed", "succeeded"),
        ("match", "succeeded"),  # then the users whose lists the change touches
    ]
