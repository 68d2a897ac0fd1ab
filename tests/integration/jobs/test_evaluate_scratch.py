"""``matchjobs evaluate --scratch-db``: evaluation by a role without CREATEDB.

The role is the app writer of ``matchjobs db roles`` (NOCREATEDB; it may read the source
tables), and its scratch database is one the operator made for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.storage import engine as engine_mod
from jobs.tools import seed

pytestmark = pytest.mark.postgres


def as_role(url: str, role: str, database: str | None = None) -> str:
    changed = sa.engine.make_url(url).set(username=role)
    if database is not None:
        changed = changed.set(database=database)
    return changed.render_as_string(hide_password=False)


@pytest.fixture
def app_role(pg_db: Any, role_prefix: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pg_db.engine.begin() as conn:
        seed.write(conn, seed.generate(120, 3, seed.DEFAULT_NOW))
    assert cli.main(["--db", pg_db.url, "db", "roles", "--prefix", role_prefix]) == 0
    capsys.readouterr()
    return role_prefix + "app"


@pytest.fixture
def scratch_of(pg_db: Any, app_role: str, new_db_name: Any) -> Iterator[str]:
    """An empty database owned by the app role, as an operator would create it."""
    name = new_db_name("scratch_")
    admin = pg_db.engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER "{app_role}"')
    yield as_role(pg_db.url, app_role, name)
    engine_mod.drop_database(pg_db.engine, as_role(pg_db.url, "postgres", name))


def evaluate(
    source: str, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    code = cli.main(
        ["--db", source, "evaluate", "--bootstrap", "0", "--out", str(out), "--json", *extra]
    )
    return code, capsys.readouterr().err


def test_a_role_without_createdb_evaluates_into_a_given_scratch_database(
    pg_db: Any, app_role: str, scratch_of: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = as_role(pg_db.url, app_role)
    # Today's default creates a database: refused, with what to do instead.
    code, err = evaluate(source, tmp_path / "a.json", capsys)
    assert code == 1
    assert "permission denied to create database" in err and "--scratch-db" in err

    code, err = evaluate(source, tmp_path / "b.json", capsys, "--scratch-db", scratch_of)
    assert code == 0, err
    first = json.loads((tmp_path / "b.json").read_text())
    assert first["n_evaluated_pairs"] > 0

    # Reused: refused while it holds the last run's rows, unless it is reset first.
    code, err = evaluate(source, tmp_path / "c.json", capsys, "--scratch-db", scratch_of)
    assert code == 1 and "must be empty" in err and "--reset-scratch" in err
    code, err = evaluate(
        source, tmp_path / "d.json", capsys, "--scratch-db", scratch_of, "--reset-scratch"
    )
    assert code == 0, err
    again = json.loads((tmp_path / "d.json").read_text())
    assert [c["metrics"] for c in again["configs"]] == [c["metrics"] for c in first["configs"]]


def test_the_source_database_is_never_taken_as_the_scratch(
    pg_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--reset-scratch deletes every row: pointed at the source it would wipe it."""
    with pg_db.engine.begin() as conn:
        seed.write(conn, seed.generate(40, 3, seed.DEFAULT_NOW))
    code, err = evaluate(
        pg_db.url, tmp_path / "e.json", capsys, "--scratch-db", pg_db.url, "--reset-scratch"
    )
    assert code == 1 and "is the source database" in err
    with pg_db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 40
