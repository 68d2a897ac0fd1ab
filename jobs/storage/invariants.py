"""Independent SQL checks of what must hold whatever fails (the fault suite's invariants).

Written apart from the jobs' own code on purpose: the filters here are re-stated in SQL
from the contract (README, compute/filters.py docstring), not imported, so a bug in the
jobs' filters or publish guard cannot hide itself. PostgreSQL only (the distance check
needs trigonometry, the run checks timestamps with time zones).

Every function returns counts; each must be zero after any fault.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from jobs.storage import schema
from jobs.storage.engine import translate_errors

# Calendar age at the set's own computed_at (UTC), as the jobs are told to compute it.
_AGE = "date_part('year', age(((m.computed_at AT TIME ZONE 'UTC')::date), {who}.birth_date))"
_EARTH_KM = 6371.0088
_DISTANCE = (
    f"2 * {_EARTH_KM} * asin(sqrt(power(sin(radians(c.latitude - u.latitude) / 2), 2) "
    "+ cos(radians(u.latitude)) * cos(radians(c.latitude)) "
    "* power(sin(radians(c.longitude - u.longitude) / 2), 2)))"
)

# reason -> condition on a served row m with its user u and candidate c (LEFT JOINed)
_FORBIDDEN: dict[str, str] = {
    "self": "m.user_id = m.candidate_id",
    "missing_user": "u.id IS NULL OR c.id IS NULL",
    "inactive": "NOT u.is_active OR NOT c.is_active",
    "liked_passed_blocked": (
        "EXISTS (SELECT 1 FROM likes l WHERE (l.user_id = m.user_id AND "
        "l.target_id = m.candidate_id) OR (l.user_id = m.candidate_id AND "
        "l.target_id = m.user_id))"
    ),
    "gender_user_side": (
        "u.gender IS NULL OR c.gender IS NULL OR ((u.seeking_mask >> c.gender) & 1) = 0"
    ),
    "gender_candidate_side": (
        "u.gender IS NULL OR c.gender IS NULL OR ((c.seeking_mask >> u.gender) & 1) = 0"
    ),
    "age_user_side": (
        f"c.birth_date IS NULL OR {_AGE.format(who='c')} NOT BETWEEN u.age_min AND u.age_max"
    ),
    "age_candidate_side": (
        f"u.birth_date IS NULL OR {_AGE.format(who='u')} NOT BETWEEN c.age_min AND c.age_max"
    ),
    # Both located: within the smaller of the two limits (NULL: the default limit).
    "distance": (
        "u.latitude IS NOT NULL AND c.latitude IS NOT NULL AND "
        f"{_DISTANCE} > least(coalesce(u.max_distance_km, :default_km), "
        "coalesce(c.max_distance_km, :default_km)) + 1e-6"
    ),
}


def forbidden_served(
    conn: sa.Connection, version: str, *, default_max_distance_km: float
) -> dict[str, int]:
    """Served rows of ``version`` that a hard filter or an exclusion forbids, per reason."""
    columns = ", ".join(
        f"count(*) FILTER (WHERE {condition}) AS {reason}"
        for reason, condition in _FORBIDDEN.items()
    )
    sql = (
        f"SELECT {columns} FROM match_scores m "
        "LEFT JOIN users u ON u.id = m.user_id LEFT JOIN users c ON c.id = m.candidate_id "
        "WHERE m.algorithm_version = :v"
    )
    with translate_errors("check forbidden pairs"):
        row = conn.execute(
            sa.text(sql), {"v": version, "default_km": default_max_distance_km}
        ).one()
    return {reason: int(value) for reason, value in row._mapping.items()}


def bad_scores(conn: sa.Connection, version: str) -> int:
    """Rows whose score or a subscore is NaN or outside [0, 1]."""
    checks = []
    for column in ("score", *(f"s_{name}" for name in schema.SUBSCORE_COLUMNS)):
        checks += [f"{column} = 'NaN'::float8", f"NOT ({column} BETWEEN 0 AND 1)"]
    sql = (
        "SELECT count(*) FROM match_scores WHERE algorithm_version = :v "
        f"AND ({' OR '.join(checks)})"
    )
    with translate_errors("check scores"):
        return int(conn.execute(sa.text(sql), {"v": version}).scalar_one())


def duplicate_rows(conn: sa.Connection) -> int:
    """(version, user, candidate) keys served more than once, over every partition."""
    sql = (
        "SELECT count(*) FROM (SELECT 1 FROM match_scores GROUP BY algorithm_version, "
        "user_id, candidate_id HAVING count(*) > 1) AS d"
    )
    with translate_errors("check duplicate rows"):
        return int(conn.execute(sa.text(sql)).scalar_one())


def leftover_stages(conn: sa.Connection) -> int:
    """Nightly stage tables that no running run owns (a dead run's leftovers)."""
    sql = (
        "SELECT count(*) FROM pg_tables t WHERE t.tablename LIKE 'match_scores_stage_%' "
        "AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.status = 'running' "
        "AND t.tablename = 'match_scores_stage_' || r.id)"
    )
    with translate_errors("check stage tables"):
        return int(conn.execute(sa.text(sql)).scalar_one())


def overlapping_runs(conn: sa.Connection) -> dict[str, int]:
    """Runs of one (job, scope) that were ``running`` at the same time.

    ``running_now``: (job, scope) slots with more than one running row. ``overlaps``: pairs
    of rows of one slot whose [started_at, finished_at) intervals intersect (an unfinished
    row is open-ended).
    """
    with translate_errors("check job_runs"):
        running_now = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT 1 FROM job_runs WHERE status = 'running' "
                "GROUP BY job_name, scope HAVING count(*) > 1) AS r"
            )
        ).scalar_one()
        overlaps = conn.execute(
            sa.text(
                "SELECT count(*) FROM job_runs a JOIN job_runs b ON a.job_name = b.job_name "
                "AND a.scope = b.scope AND a.id < b.id "
                "WHERE b.started_at < coalesce(a.finished_at, 'infinity') "
                "AND a.started_at < coalesce(b.finished_at, 'infinity')"
            )
        ).scalar_one()
    return {"running_now": int(running_now), "overlaps": int(overlaps)}


def rows_of_dead_runs(conn: sa.Connection, version: str) -> dict[str, int]:
    """Served rows stamped by a match run that did not succeed (every set carries its run's
    ``now`` in ``computed_at``, which is the run's ``started_at``).

    ``abandoned``: written by a run after it lost its lease (or before, and published by
    nobody: both are wrong). ``failed``: a failed run's output served.
    """
    sql = (
        "SELECT r.status, count(*) FROM match_scores m JOIN job_runs r "
        "ON r.job_name = 'match' AND r.started_at = m.computed_at "
        "WHERE m.algorithm_version = :v AND r.status IN ('abandoned', 'failed') "
        "AND NOT EXISTS (SELECT 1 FROM job_runs ok WHERE ok.job_name = 'match' "
        "AND ok.started_at = m.computed_at AND ok.status LIKE 'succeeded%') "
        "GROUP BY r.status"
    )
    with translate_errors("check rows of dead runs"):
        found = dict(conn.execute(sa.text(sql), {"v": version}).all())
    return {"abandoned": int(found.get("abandoned", 0)), "failed": int(found.get("failed", 0))}


def all_checks(
    conn: sa.Connection, version: str, *, default_max_distance_km: float
) -> dict[str, Any]:
    """Every check at once: ``{name: count or {reason: count}}``."""
    return {
        "duplicate_rows": duplicate_rows(conn),
        "forbidden_served": forbidden_served(
            conn, version, default_max_distance_km=default_max_distance_km
        ),
        "bad_scores": bad_scores(conn, version),
        "runs": overlapping_runs(conn),
        "rows_of_dead_runs": rows_of_dead_runs(conn, version),
        "leftover_stages": leftover_stages(conn),
    }


def violations(checks: dict[str, Any]) -> int:
    """The sum of every count in :func:`all_checks`' result."""
    total = 0
    for value in checks.values():
        total += sum(value.values()) if isinstance(value, dict) else int(value)
    return total
