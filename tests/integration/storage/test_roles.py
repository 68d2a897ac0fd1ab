"""``matchjobs db roles``: each role may do what its job needs, and the database refuses the rest.

The expected privileges below are written out from the issue (least privilege, issue 9), not
derived from ``jobs.storage.roles``, so a wrong plan fails here. Every refusal is the
database's own (``InsufficientPrivilege``), probed with real statements as each role.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.errors import StorageError
from jobs.storage import api, events, ledger, roles, schema, scores, signals
from jobs.storage import engine as engine_mod
from jobs.storage import population as population_store
from jobs.tools import seed as seed_mod

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SOURCE = (
    "users",
    "quiz_questions",
    "quiz_answers",
    "subjects",
    "interests",
    "user_interests",
    "rating_dimensions",
    "ratings",
    "likes",
)
ALL = "SIUD"
LEDGER = {"job_runs": "SIU"}
SIGNALS = {
    "user_quiz_vectors": "S",
    "user_interest_index": "S",
    "user_interest_vectors": "S",
    "profile_rating_aggregates": "S",
    "profile_rating_standing": "S",
    "user_rating_preferences": "S",
    "user_like_behaviour": "S",
    "user_taste_vectors": "S",
}
JOBS: dict[str, dict[str, str]] = {
    "quiz": {
        "users": "S",
        "quiz_questions": "S",
        "quiz_answers": "S",
        "user_quiz_vectors": ALL,
        **LEDGER,
    },
    "interests": {
        "users": "S",
        "interests": "S",
        "user_interests": "S",
        "user_interest_index": ALL,
        "user_interest_vectors": ALL,
        **LEDGER,
    },
    "ratings": {
        "users": "S",
        "rating_dimensions": "S",
        "ratings": "S",
        "profile_rating_aggregates": ALL,
        "profile_rating_standing": ALL,
        "user_rating_preferences": ALL,
        **LEDGER,
    },
    "likes": {
        "users": "S",
        "likes": "S",
        "user_like_behaviour": ALL,
        "user_taste_vectors": ALL,
        **LEDGER,
    },
    "match": {
        "users": "S",
        "interests": "S",
        "rating_dimensions": "S",
        # not the raw ratings: the match job reads what the ratings job derived
        "likes": "S",
        **SIGNALS,
        "match_scores": ALL,
        "reason_patterns": ALL,
        "algorithm_versions": ALL,
        "match_set_states": ALL,
        **LEDGER,
    },
    "feed": {
        "likes": "S",
        "match_scores": "S",
        "reason_patterns": "S",
        "feed_cards": ALL,
        **LEDGER,
    },
}


def union(*grants: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for grant in grants:
        for table, ops in grant.items():
            out[table] = "".join(op for op in ALL if op in out.get(table, "") + ops)
    return out


EXPECTED: dict[str, dict[str, str]] = {
    "api": {"match_scores": "S", "reason_patterns": "S"},
    # INSERT into the queue (RETURNING id reads one column: no SELECT * of it).
    "app": {**{t: ALL for t in SOURCE}, "events": "I"},
    **JOBS,
    "worker": union(*JOBS.values(), {"events": "SU"}),
    # The owner's partitions come with ownership of match_scores.
    "nightly": union(*JOBS.values(), {"match_scores_default": ALL}),
}
PROBED_TABLES = (*(t.name for t in schema.metadata.sorted_tables), "match_scores_default")

pytestmark = pytest.mark.postgres


def role_url(db: Any, prefix: str, role: str) -> str:
    url = sa.engine.make_url(db.url).set(username=prefix + role)
    return url.render_as_string(hide_password=False)


def role_engine(db: Any, prefix: str, role: str) -> sa.Engine:
    return engine_mod.create_engine(role_url(db, prefix, role))


def db_roles(db: Any, prefix: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["--db", db.url, "db", "roles", "--prefix", prefix]) == 0
    return capsys.readouterr().out


def refused(exc: BaseException) -> bool:
    """True when ``exc`` or one of its causes is the database's permission refusal."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, psycopg.errors.InsufficientPrivilege):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def probe(conn: sa.Connection, table: str, op: str) -> bool:
    """Whether the database lets the connected role do ``op`` on ``table`` (S, I, U or D)."""
    first = schema.metadata.tables.get(table, schema.match_scores).columns[0].name
    sql = {
        "S": f'SELECT * FROM "{table}" LIMIT 0',
        "I": f'INSERT INTO "{table}" DEFAULT VALUES',
        "U": f'UPDATE "{table}" SET "{first}" = NULL WHERE false',
        "D": f'DELETE FROM "{table}" WHERE false',
    }[op]
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(sql)
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        # Past the privilege check, DEFAULT VALUES breaks a NOT NULL: the write was allowed.
        return not refused(exc)
    savepoint.rollback()
    return True


def allowed(engine: sa.Engine) -> dict[str, str]:
    out: dict[str, str] = {}
    with engine.connect() as conn, conn.begin():
        for table in PROBED_TABLES:
            ops = "".join(op for op in ALL if probe(conn, table, op))
            if ops:
                out[table] = ops
    return out


def grants_snapshot(db: Any, prefix: str) -> dict[str, Any]:
    """Privileges, memberships, attributes and ownership of the prefix's roles."""
    like = {"p": prefix.replace("_", r"\_") + "%"}
    with db.engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT grantee, table_name, privilege_type FROM information_schema"
                ".role_table_grants WHERE grantee LIKE :p ORDER BY 1, 2, 3"
            ),
            like,
        ).all()
        columns = conn.execute(
            sa.text(
                "SELECT grantee, table_name, column_name, privilege_type FROM "
                "information_schema.column_privileges WHERE grantee LIKE :p ORDER BY 1, 2, 3, 4"
            ),
            like,
        ).all()
        members = conn.execute(
            sa.text(
                "SELECT g.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles g ON "
                "g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member WHERE m.rolname LIKE :p "
                "ORDER BY 1, 2"
            ),
            like,
        ).all()
        attributes = conn.execute(
            sa.text(
                "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole "
                "FROM pg_roles WHERE rolname LIKE :p ORDER BY 1"
            ),
            like,
        ).all()
        owners = conn.execute(
            sa.text(
                "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relname LIKE 'match_scores%' AND relkind IN ('r', 'p') ORDER BY 1"
            )
        ).all()
    return {
        "tables": tables,
        "columns": columns,
        "members": members,
        "attributes": attributes,
        "owners": owners,
    }


def test_db_roles_is_idempotent_and_undoes_hand_made_grants(
    pg_db: Any, role_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = db_roles(pg_db, role_prefix, capsys)
    assert f"{role_prefix}api" in out and f"{role_prefix}nightly" in out
    first = grants_snapshot(pg_db, role_prefix)
    assert len(first["attributes"]) == 11
    assert not any(row[2] or row[3] or row[4] for row in first["attributes"])  # no super/db/role
    db_roles(pg_db, role_prefix, capsys)
    assert grants_snapshot(pg_db, role_prefix) == first
    api, app = f'"{role_prefix}api"', f'"{role_prefix}app"'
    with pg_db.engine.begin() as conn:
        conn.exec_driver_sql(f"GRANT INSERT ON users TO {api}")
        conn.exec_driver_sql(f"GRANT {app} TO {api}")
        conn.exec_driver_sql(f"ALTER ROLE {api} CREATEDB")
    assert grants_snapshot(pg_db, role_prefix) != first
    db_roles(pg_db, role_prefix, capsys)
    assert grants_snapshot(pg_db, role_prefix) == first


def test_each_role_may_do_exactly_what_its_work_needs(
    db: Any, role_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if not db.is_postgres:
        pytest.skip("SQLite has no roles or grants: nothing can be refused by the database")
    db_roles(db, role_prefix, capsys)
    for role, expected in EXPECTED.items():
        engine = role_engine(db, role_prefix, role)
        try:
            assert allowed(engine) == expected, role
        finally:
            engine.dispose()


def test_the_owner_group_cannot_log_in(
    pg_db: Any, role_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db_roles(pg_db, role_prefix, capsys)
    engine = role_engine(pg_db, role_prefix, "owner")
    with pytest.raises(sa.exc.OperationalError, match="not permitted to log in"):
        engine.connect()
    engine.dispose()


def test_forbidden_writes_through_storage_are_refused_by_the_database(
    pg_db: Any, role_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db_roles(pg_db, role_prefix, capsys)
    no_scores = pd.DataFrame(columns=list(scores.FRAME_COLUMNS))
    # one row to write: a sync with nothing to change writes nothing, so nothing is refused
    one_vector = signals.vector_rows(
        schema.user_quiz_vectors, np.array([1]), np.zeros((1, 3)), np.array([5]), NOW
    )

    def attempt(role: str, operation: Any) -> StorageError:
        engine = role_engine(pg_db, role_prefix, role)
        try:
            with pytest.raises(StorageError) as caught, engine.connect() as conn:
                operation(conn)
        finally:
            engine.dispose()
        assert refused(caught.value), caught.value
        return caught.value

    def write_scores(conn: sa.Connection) -> None:
        nobody = population_store.FilterSnapshot(
            np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64)
        )
        scores.replace_user_sets(conn, [1], no_scores, version="v1", computed_at=NOW, guard=nobody)

    def write_quiz_vectors(conn: sa.Connection) -> None:
        signals.sync(conn, schema.user_quiz_vectors, one_vector, None, "user_id")

    # The API reader reads the suggestions and nothing else, and writes nothing.
    assert "match_scores" in str(attempt("api", write_scores))
    assert "users" in str(attempt("api", signals.existing_user_ids))
    # A job writes only its own tables; the app writes no derived table.
    for role in ("quiz", "interests", "ratings", "likes", "feed", "app"):
        attempt(role, write_scores)
    for role in ("match", "ratings", "likes", "app", "api"):
        attempt(role, write_quiz_vectors)
    # The worker drains the queue; it never writes the app's source tables.
    population = seed_mod.generate(5, 1, NOW)
    attempt("worker", lambda conn: seed_mod.write(conn, population))


def test_every_table_of_the_schema_is_granted_to_some_role() -> None:
    """A table a migration adds must be placed in the plan, or no job could touch it."""
    granted = {table for role in roles.plan() for table in role.tables}
    assert granted == set(schema.metadata.tables)


def test_db_roles_on_sqlite_says_there_are_none_and_fails(
    sqlite_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--db", sqlite_db.url, "db", "roles"]) == 1
    err = capsys.readouterr().err
    assert "SQLite has no roles" in err and "PostgreSQL" in err


def test_a_bad_prefix_is_refused_before_anything_is_written(
    pg_db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--db", pg_db.url, "db", "roles", "--prefix", 'x"; DROP TABLE users']) == 1
    assert "role prefix" in capsys.readouterr().err
    with pg_db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('users')")).scalar_one() is not None


@pytest.mark.ray
@pytest.mark.slow
def test_app_nightly_worker_and_api_work_under_their_roles(
    pg_db: Any, role_prefix: str, capsys: pytest.CaptureFixture[str], ray_cluster: None
) -> None:
    db_roles(pg_db, role_prefix, capsys)
    app = role_engine(pg_db, role_prefix, "app")
    with app.begin() as conn:
        seed_mod.write(conn, seed_mod.generate(150, 5, NOW))
    nightly = role_url(pg_db, role_prefix, "nightly")
    for attempt in range(2):
        assert cli.main(["--db", nightly, "run", "nightly", "--json"]) == 0, attempt
        capsys.readouterr()
        runs = ledger.recent_runs(pg_db.engine, limit=50)
        assert set(runs["status"]) == {"succeeded"}, runs[["job_name", "status", "error"]]
        nightly_match = runs[(runs["job_name"] == "match") & (runs["trigger"] == "nightly")]
        metadata = json.loads(nightly_match["metadata"].iloc[0])
        # The nightly's own path: Ray actors COPY into its stage, swapped in as a partition.
        assert metadata["write_mode"] == "stage_and_swap"
        assert metadata["shards"]["executor"] == "ray"
        # Rerun after the first swap: the new partition goes to the owner group, and the
        # second nightly must still detach and drop it through its membership.
        db_roles(pg_db, role_prefix, capsys)
    with pg_db.engine.connect() as conn:
        user = api.users_with_scores(conn, "v1")[0]
    event_id = events.enqueue(app, "quiz_submitted", user, NOW)
    app.dispose()
    worker = role_url(pg_db, role_prefix, "worker")
    assert cli.main(["--db", worker, "worker", "--once"]) == 0
    with pg_db.engine.connect() as conn:
        status = conn.execute(
            sa.select(schema.events.c.status).where(schema.events.c.id == event_id)
        ).scalar_one()
    assert status == "done"
    last = ledger.recent_runs(pg_db.engine, limit=1, job_name="match")
    assert last["trigger"].iloc[0] == "event" and last["status"].iloc[0] == "succeeded"
    # The API reader reads the new partition through the parent.
    reader = role_engine(pg_db, role_prefix, "api")
    with reader.connect() as read, pg_db.engine.connect() as admin:
        served = api.suggestions(read, "v1", user, 5)
        assert len(served) > 0
        pd.testing.assert_frame_equal(served, api.suggestions(admin, "v1", user, 5))
    reader.dispose()
