"""Errors a person can act on: one line on stderr, what is wrong and what to do, no traceback.

Each case runs ``matchjobs`` as a subprocess, as a person would, and checks the exit code
and the whole of stderr.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from compute import signals
from jobs.storage import engine as engine_mod
from jobs.storage import schema

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PG_SERVER = os.environ.get("MATCHJOBS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def matchjobs(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Assert exit ``code`` and a single stderr line holding every fragment; that line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def pg_url(database: str) -> str:
    return sa.engine.make_url(PG_SERVER).set(database=database).render_as_string(False)


def test_a_plain_path_as_db_names_the_url_it_meant(tmp_path: Path) -> None:
    """Regression: `--db matchjobs.db` failed with a URL-parsing error and no suggestion."""
    path = tmp_path / "x.db"
    proc = matchjobs("--db", str(path), "suggestions", "1")
    one_line(proc, 1, f"did you mean sqlite:///{path}?")


def test_a_read_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    """Regression: `suggestions` on a missing file created an empty SQLite file, then failed
    on a missing table."""
    path = tmp_path / "none.db"
    proc = matchjobs("--db", f"sqlite:///{path}", "suggestions", "1")
    one_line(proc, 1, f"no database at {path}", "db upgrade")
    assert not path.exists()


def test_a_database_without_the_schema_says_run_db_upgrade(tmp_path: Path) -> None:
    """Regression: a database without tables failed with the driver's 'no such table'."""
    path = tmp_path / "bare.db"
    engine = engine_mod.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE other (x INTEGER)")
    engine.dispose()
    url = f"sqlite:///{path}"
    one_line(matchjobs("--db", url, "suggestions", "1"), 1, f"`matchjobs --db {url} db upgrade`")
    verbose = matchjobs("--db", url, "-v", "status").stderr
    assert "db upgrade" in verbose and "caused by" in verbose and "Traceback" not in verbose
    assert "Traceback" in matchjobs("--db", url, "--debug", "suggestions", "1").stderr
    debug_env = matchjobs("--db", url, "suggestions", "1", env={"MATCHJOBS_DEBUG": "1"})
    assert "Traceback" in debug_env.stderr


@pytest.mark.postgres
def test_postgres_without_schema_unreachable_or_missing_is_one_line() -> None:
    """Regression: an empty database, a wrong port and a missing database each ended in a
    psycopg traceback."""
    admin = engine_mod.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    name = f"mjt_bare_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        one_line(matchjobs("--db", pg_url(name), "suggestions", "1"), 1, "db upgrade")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    one_line(
        matchjobs("--db", pg_url(name), "status"),
        1,
        f"database {name} does not exist",
        "db upgrade",
    )
    wrong_port = sa.engine.make_url(pg_url(name)).set(port=1).render_as_string(False)
    one_line(matchjobs("--db", wrong_port, "suggestions", "1"), 1, "cannot reach PostgreSQL", ":1")


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    """Regression: `demo --users -5` started seeding; a usage error printed two lines."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    one_line(matchjobs("--db", url, "demo", "--users", "-5"), 2, "--users: must be ≥ 1")
    assert not (tmp_path / "demo.db").exists()


def test_config_errors_name_the_line_or_the_key(tmp_path: Path) -> None:
    """Regression: bad YAML printed PyYAML's four-line report; a validator's message carried
    pydantic's "Value error," and, with -v, its trailer."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("weights:\n  quiz: 0.3\ntop_k: [\n")
    url = f"sqlite:///{tmp_path / 'none.db'}"
    one_line(matchjobs("--db", url, "--config", str(broken), "suggestions", "1"), 1, "line 4")
    zero = tmp_path / "zero.yaml"
    zero.write_text("weights: {" + ", ".join(f"{s.key}: 0" for s in signals.SIGNALS) + "}\n")
    proc = matchjobs("--db", url, "suggestions", "1", "--config", str(zero), "-v")
    line = one_line(proc, 1, "weights: at least one weight must be > 0")
    assert "Value error" not in line and "pydantic" not in proc.stderr


def test_a_user_that_does_not_exist_is_an_error(db) -> None:
    """Regression: `suggestions 999999` exited 0 with advice, and `score-user 999999`
    recorded a succeeded run."""
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.users), [{"id": 1, "seeking_mask": 2, "created_at": T0}])
    one_line(matchjobs("--db", db.url, "suggestions", "999999"), 1, "user 999999 does not exist")
    one_line(matchjobs("score-user", "999999", "--db", db.url), 1, "user 999999 does not exist")
    one_line(matchjobs("--db", db.url, "event", "rating_created", "1"), 1, "needs other_user_id")
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.job_runs)).scalar() == 0
    # --db after the command is accepted; a user without a list is not an error.
    proc = matchjobs("suggestions", "1", "--db", db.url)
    assert proc.returncode == 0 and "no suggestions for user 1" in proc.stdout
