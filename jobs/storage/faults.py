"""SQL of the fault suite (scripts/faults): probes of a running job, the app's writes
that a fault scenario makes at random moments, and sessions to cut. PostgreSQL only.

The app's writes do what the app does: a like, pass or block takes the pair out of both
lists in the same transaction, a deactivation takes the user out of every list, a filter
change takes the user's rows on either side out (its list is rebuilt by an event).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import sqlalchemy as sa

from jobs.storage.engine import translate_errors


def running_run(conn: sa.Connection, job: str, scope: str) -> int | None:
    value = conn.execute(
        sa.text(
            "SELECT id FROM job_runs WHERE job_name = :j AND scope = :s AND status = 'running'"
        ),
        {"j": job, "s": scope},
    ).scalar_one_or_none()
    return None if value is None else int(value)


def run_row(conn: sa.Connection, run_id: int) -> dict[str, Any]:
    row = conn.execute(
        sa.text("SELECT id, status, started_at, finished_at, error FROM job_runs WHERE id = :i"),
        {"i": run_id},
    ).one()
    return dict(row._mapping)


def runs_since(conn: sa.Connection, job: str, after_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.text(
            "SELECT id, status, started_at, finished_at, duration_ms, error FROM job_runs "
            "WHERE job_name = :j AND id > :i ORDER BY id"
        ),
        {"j": job, "i": after_id},
    ).all()
    return [dict(r._mapping) for r in rows]


def last_run_id(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM job_runs")).scalar_one())


def stage_rows(conn: sa.Connection, run_id: int) -> int:
    """Rows in run ``run_id``'s stage so far (0 while it does not exist)."""
    name = f"match_scores_stage_{int(run_id)}"
    exists = conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one()
    if not exists:
        return 0
    try:
        with conn.begin_nested():
            return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one())
    except sa.exc.DBAPIError:
        return 0  # dropped or renamed between the two statements


def served_digest(conn: sa.Connection, version: str) -> tuple[int, str]:
    """(rows, digest of the served pairs). Scores are left out: newness moves with the
    clock, so two clean runs seconds apart differ in the ninth digit."""
    rows = conn.execute(
        sa.text(
            "SELECT user_id, candidate_id FROM match_scores "
            "WHERE algorithm_version = :v ORDER BY user_id, candidate_id"
        ),
        {"v": version},
    ).all()
    digest = hashlib.sha1(repr([tuple(r) for r in rows]).encode()).hexdigest()[:16]
    return len(rows), digest


def served_stamps(conn: sa.Connection, version: str) -> set[dt.datetime]:
    return set(
        conn.execute(
            sa.text("SELECT DISTINCT computed_at FROM match_scores WHERE algorithm_version = :v"),
            {"v": version},
        ).scalars()
    )


def read_set(conn: sa.Connection, version: str, user_id: int, limit: int) -> list[Any]:
    """The API's read (``jobs.storage.api``), plus each row's ``computed_at``: which set."""
    return list(
        conn.execute(
            sa.text(
                "SELECT candidate_id, score, computed_at FROM match_scores "
                "WHERE algorithm_version = :v AND user_id = :u ORDER BY score DESC LIMIT :n"
            ),
            {"v": version, "u": user_id, "n": limit},
        ).all()
    )


def listed_users(conn: sa.Connection, version: str) -> list[int]:
    return [
        int(u)
        for u in conn.execute(
            sa.text("SELECT DISTINCT user_id FROM match_scores WHERE algorithm_version = :v"),
            {"v": version},
        ).scalars()
    ]


def served_pairs(conn: sa.Connection, version: str, limit: int) -> list[tuple[int, int]]:
    rows = conn.execute(
        sa.text(
            "SELECT user_id, candidate_id FROM match_scores WHERE algorithm_version = :v "
            "ORDER BY score DESC LIMIT :n"
        ),
        {"v": version, "n": limit},
    ).all()
    return [(int(a), int(b)) for a, b in rows]


def record_exclusion(conn: sa.Connection, user_id: int, target_id: int, kind: str) -> None:
    """The app's like/pass/block: recorded, and the pair leaves both lists at once."""
    with translate_errors(f"record {kind}"):
        conn.execute(
            sa.text(
                "INSERT INTO likes (user_id, target_id, kind, created_at) "
                "VALUES (:a, :b, :k, now()) ON CONFLICT (user_id, target_id) "
                "DO UPDATE SET kind = excluded.kind, created_at = excluded.created_at"
            ),
            {"a": user_id, "b": target_id, "k": kind},
        )
        conn.execute(
            sa.text(
                "DELETE FROM match_scores WHERE (user_id = :a AND candidate_id = :b) "
                "OR (user_id = :b AND candidate_id = :a)"
            ),
            {"a": user_id, "b": target_id},
        )


def deactivate(conn: sa.Connection, user_id: int) -> None:
    """The app's deactivation: the user leaves every list at once."""
    with translate_errors("deactivate user"):
        conn.execute(sa.text("UPDATE users SET is_active = false WHERE id = :u"), {"u": user_id})
        _drop_user_rows(conn, user_id)


def narrow_age_range(conn: sa.Connection, user_id: int) -> None:
    """The app's filter change (an age range narrowed to one year); the user's rows on
    either side leave the lists until an event or the next nightly rebuilds them."""
    with translate_errors("change filters"):
        conn.execute(sa.text("UPDATE users SET age_max = age_min WHERE id = :u"), {"u": user_id})
        _drop_user_rows(conn, user_id)


def _drop_user_rows(conn: sa.Connection, user_id: int) -> None:
    conn.execute(
        sa.text("DELETE FROM match_scores WHERE user_id = :u OR candidate_id = :u"),
        {"u": user_id},
    )


def terminate_sessions(
    conn: sa.Connection,
    database: str,
    query_like: str,
    spare_prefix: str = "faults-",
    *,
    busy_only: bool = True,
) -> int:
    """``pg_terminate_backend`` every other session of ``database`` (``busy_only``: not
    idle) whose last statement matches ``query_like`` (``%`` for all), sparing the fault
    suite's own (``application_name`` starting with ``spare_prefix``); how many were
    terminated."""
    with translate_errors("terminate sessions"):
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                    "pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND query ILIKE :q "
                    "AND (state <> 'idle' OR NOT :busy) AND application_name NOT LIKE :spare"
                ),
                {"d": database, "q": query_like, "spare": f"{spare_prefix}%", "busy": busy_only},
            ).scalar_one()
        )


def enqueue_many(conn: sa.Connection, kinds: list[str], user_ids: list[int]) -> int:
    """The app's events, many at once (what ``events.enqueue`` writes, one row each)."""
    rows = [{"k": k, "u": int(u)} for k, u in zip(kinds, user_ids, strict=True)]
    with translate_errors("enqueue events"):
        conn.execute(
            sa.text(
                "INSERT INTO events (kind, user_id, status, attempts, created_at) "
                "VALUES (:k, :u, 'pending', 0, now())"
            ),
            rows,
        )
    return len(rows)


def event_counts(conn: sa.Connection) -> dict[str, int]:
    """Events per status; ``unfinished`` counts pending and processing together."""
    found = dict(conn.execute(sa.text("SELECT status, count(*) FROM events GROUP BY status")).all())
    counts = {status: int(n) for status, n in found.items()}
    counts["unfinished"] = counts.get("pending", 0) + counts.get("processing", 0)
    return counts


def claimed_by(conn: sa.Connection, run_ids: list[int]) -> int:
    """Events still claimed by any of ``run_ids`` (a dead worker's batches)."""
    if not run_ids:
        return 0
    return int(
        conn.execute(
            sa.text(
                "SELECT count(*) FROM events WHERE status = 'processing' "
                "AND claim_run_id = ANY(CAST(:ids AS BIGINT[]))"
            ),
            {"ids": [int(i) for i in run_ids]},
        ).scalar_one()
    )


def running_worker_runs(conn: sa.Connection) -> list[int]:
    return [
        int(i)
        for i in conn.execute(
            sa.text("SELECT id FROM job_runs WHERE job_name = 'worker' AND status = 'running'")
        ).scalars()
    ]


def create_database(conn: sa.Connection, name: str) -> None:
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')


def drop_database(conn: sa.Connection, name: str) -> None:
    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
