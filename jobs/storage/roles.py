"""Least-privilege PostgreSQL roles: what ``matchjobs db roles`` creates or updates.

Every name takes a prefix (default ``matchjobs_``); with it the roles are:

================  =====  ==============================================================
role              login  may
================  =====  ==============================================================
``api``           yes    SELECT ``match_scores``, ``reason_patterns`` (the suggestions read)
``app``           yes    read and write the source tables; INSERT into ``events``
``quiz``          yes    write ``user_quiz_vectors``; read its inputs; the ledger
``interests``     yes    write ``user_interest_index``, ``user_interest_vectors``; …
``ratings``       yes    write ``profile_rating_aggregates``, ``profile_rating_standing``,
                         ``user_rating_preferences``
``likes``         yes    write ``user_like_behaviour``, ``user_taste_vectors``; read users, likes
``match``         yes    write ``match_scores``, ``reason_patterns``, ``algorithm_versions``,
                         ``match_set_states``; read the signal tables, users, likes, … (not
                         ``ratings``)
``feed``          yes    write ``feed_cards``; read ``match_scores``, ``reason_patterns``, …
``worker``        yes    member of the six job roles; claim and mark ``events``
``owner``         no     owns ``match_scores`` and its partitions (DETACH/ATTACH need it)
``nightly``       yes    member of the six job roles and of ``owner``
================  =====  ==============================================================

"The ledger" is SELECT, INSERT, UPDATE on ``job_runs`` and its id sequence: the runner
claims a (job, scope) slot, beats its heartbeat and records the outcome with the job's own
connection. Writers also SELECT their own tables (deletes and updates by key read them,
and ``CREATE TEMPORARY TABLE … (LIKE t)`` needs it), and every job role may create
temporary tables (the scope-id and sync stages of :mod:`jobs.storage.bulk`).

The worker and the nightly each run several jobs in one process with one connection URL
(signal jobs, match, feed), so each is one role holding the union of those jobs' grants:
separate URLs inside one process would isolate nothing. The nightly creates its stage table
as itself (so it owns it and its Ray actors, connecting with the same URL, COPY into it),
and swaps it in through its membership of ``owner``; a swapped-in partition is read and
written through the parent, whose grants are the only ones checked, so no grant is needed
on future partitions. Rerun the command after every ``db upgrade``: it re-owns partitions
and stage tables made by anyone else, and a table a migration adds is granted to nobody
until it is listed here.

The command converges: it creates missing roles, resets the attributes of existing ones
(NOSUPERUSER, NOCREATEDB, NOCREATEROLE, INHERIT, LOGIN as listed), revokes every privilege
and membership of these roles in the database before granting the listed ones, so a second
run changes nothing and a hand-made extra grant is removed. It never sets passwords: the
operator does (``\\password`` in psql sends only a hash), and each process reads its URL
from its environment. Run it as the schema's owner with CREATEROLE (usually the superuser
that ran the migrations).
"""

from __future__ import annotations

import dataclasses
import re

import sqlalchemy as sa

from jobs.errors import ConfigError
from jobs.storage import publish_guard, schema
from jobs.storage.engine import is_postgres, translate_errors

DEFAULT_PREFIX = "matchjobs_"
_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
_WRITE = "SELECT, INSERT, UPDATE, DELETE"
_LEDGER = {schema.job_runs.name: "SELECT, INSERT, UPDATE"}
SIGNAL_TABLES = (
    schema.user_quiz_vectors,
    schema.user_interest_index,
    schema.user_interest_vectors,
    schema.profile_rating_aggregates,
    schema.profile_rating_standing,
    schema.user_rating_preferences,
    schema.user_like_behaviour,
    schema.user_taste_vectors,
)
# job -> the tables it reads besides its own (schema.DERIVED_OWNERS says what it writes)
JOB_READS: dict[str, tuple[sa.Table, ...]] = {
    "quiz": (schema.users, schema.quiz_questions, schema.quiz_answers),
    "interests": (schema.users, schema.interests, schema.user_interests),
    "ratings": (schema.users, schema.rating_dimensions, schema.ratings),
    "likes": (schema.users, schema.likes),
    "match": (
        schema.users,
        schema.interests,
        schema.rating_dimensions,
        schema.likes,
        *SIGNAL_TABLES,
    ),
    "feed": (schema.likes, schema.match_scores, schema.reason_patterns),
}
JOB_ROLES = tuple(JOB_READS)
# tables whose ``id`` is a serial: an INSERT advances the sequence, which needs USAGE on it
SERIAL_TABLES = (schema.feed_cards, schema.job_runs, schema.events)


@dataclasses.dataclass(frozen=True)
class Role:
    """One role of the plan: its grants on tables, sequences, schema and memberships."""

    suffix: str
    name: str
    login: bool
    purpose: str
    # table -> privilege list, as written after GRANT (column lists allowed)
    tables: dict[str, str] = dataclasses.field(default_factory=dict)
    # tables whose serial id sequence the role may advance
    sequences: tuple[str, ...] = ()
    member_of: tuple[str, ...] = ()  # names of roles whose privileges it inherits
    temporary: bool = False  # may create temporary tables
    functions: tuple[str, ...] = ()  # functions (no arguments) the role may EXECUTE


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a safe role-name prefix, else ``ConfigError`` naming it."""
    if not _PREFIX_PATTERN.fullmatch(prefix):
        raise ConfigError(
            "role prefix must be a lowercase letter then up to 39 lowercase letters, digits "
            f"or underscores; got {prefix!r}"
        )
    return prefix


def plan(prefix: str = DEFAULT_PREFIX) -> tuple[Role, ...]:
    """The roles ``apply`` makes, in creation order (members after the roles they join)."""
    check_prefix(prefix)
    roles: list[Role] = [
        Role(
            "api",
            prefix + "api",
            True,
            "SELECT match_scores and reason_patterns only: the /api/suggestions read",
            tables={schema.match_scores.name: "SELECT", schema.reason_patterns.name: "SELECT"},
        ),
        Role(
            "app",
            prefix + "app",
            True,
            "writes the source tables and appends events",
            # RETURNING id needs SELECT on that column, and nothing more of the queue.
            tables={
                **{t.name: _WRITE for t in schema.SOURCE_TABLES},
                schema.events.name: "INSERT, SELECT (id)",
            },
            sequences=(schema.events.name,),
        ),
    ]
    for job in JOB_ROLES:
        owned = schema.DERIVED_OWNERS[job]
        tables = {t.name: "SELECT" for t in JOB_READS[job]}
        tables.update({t.name: _WRITE for t in owned})
        tables.update(_LEDGER)
        serial = tuple(t.name for t in owned if t in SERIAL_TABLES)
        roles.append(
            Role(
                job,
                prefix + job,
                True,
                f"the {job} job: writes {', '.join(t.name for t in owned)}",
                tables=tables,
                sequences=(*serial, schema.job_runs.name),
                temporary=True,
                # The match job's publish guard holds likes and users (migration 0005).
                functions=(publish_guard.LOCK_FUNCTION,) if job == "match" else (),
            )
        )
    jobs = tuple(prefix + job for job in JOB_ROLES)
    roles += [
        Role(
            "worker",
            prefix + "worker",
            True,
            "the event worker: the job roles, and claims/marks events",
            tables={schema.events.name: "SELECT, UPDATE"},
            member_of=jobs,
        ),
        Role(
            "owner",
            prefix + "owner",
            False,
            "owns match_scores and its partitions (the nightly's swap needs ownership)",
        ),
        Role(
            "nightly",
            prefix + "nightly",
            True,
            "the nightly pipeline and its Ray actors: the job roles and owner",
            member_of=(*jobs, prefix + "owner"),
        ),
    ]
    return tuple(roles)


def _ident(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def require_postgres(bind: sa.Engine | sa.Connection) -> None:
    if not is_postgres(bind):
        raise ConfigError(
            "SQLite has no roles or grants: any process that can open the file can write "
            "every table. Least privilege needs PostgreSQL (--db postgresql://…)"
        )


def apply(conn: sa.Connection, prefix: str = DEFAULT_PREFIX) -> tuple[Role, ...]:
    """Create or update every role of :func:`plan` in ``conn``'s database; the plan.

    Run in one transaction (the caller's): role attributes and memberships are
    cluster-wide, grants and ownership belong to this database.
    """
    require_postgres(conn)
    roles = plan(prefix)
    q = {role.name: _ident(conn, role.name) for role in roles}
    with translate_errors("db roles"):
        if conn.execute(sa.text("SELECT to_regclass('match_scores')")).scalar_one() is None:
            raise ConfigError("the schema is missing: run `matchjobs db upgrade` first")
        existing = set(
            conn.execute(
                sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"),
                {"names": list(q)},
            ).scalars()
        )
        database = _ident(conn, conn.execute(sa.text("SELECT current_database()")).scalar_one())
        for role in roles:
            attributes = (
                f"{'LOGIN' if role.login else 'NOLOGIN'} "
                "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
            )
            verb = "ALTER" if role.name in existing else "CREATE"
            conn.exec_driver_sql(f"{verb} ROLE {q[role.name]} {attributes}")
        _take_ownership(conn, q[prefix + "owner"])
        for role in roles:
            if role.suffix == "owner":
                continue  # revoking from the owner would strip its own table privileges
            conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {q[role.name]}")
            conn.exec_driver_sql(
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {q[role.name]}"
            )
            conn.exec_driver_sql(
                f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {q[role.name]}"
            )
            conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA public FROM {q[role.name]}")
            conn.exec_driver_sql(f"REVOKE ALL ON DATABASE {database} FROM {q[role.name]}")
        _revoke_memberships(conn, list(q))
        for role in roles:
            name = q[role.name]
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {name}")
            if role.login:
                conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {name}")
            if role.temporary:
                conn.exec_driver_sql(f"GRANT TEMPORARY ON DATABASE {database} TO {name}")
            for table, privileges in role.tables.items():
                conn.exec_driver_sql(f"GRANT {privileges} ON TABLE {_ident(conn, table)} TO {name}")
            for table in role.sequences:
                sequence = conn.execute(
                    sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
                ).scalar_one()
                conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE {sequence} TO {name}")
            for function in role.functions:
                conn.exec_driver_sql(f"GRANT EXECUTE ON FUNCTION public.{function}() TO {name}")
            for group in role.member_of:
                conn.exec_driver_sql(f"GRANT {q[group]} TO {name}")
        # The stage tables the nightly creates need CREATE on the schema.
        conn.exec_driver_sql(f"GRANT CREATE ON SCHEMA public TO {q[prefix + 'owner']}")
    return roles


def _take_ownership(conn: sa.Connection, owner: str) -> None:
    """Give ``owner`` match_scores, every partition of it and any leftover stage table."""
    names = conn.execute(
        sa.text(
            "SELECT 'match_scores' UNION "
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'match_scores'::regclass UNION "
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE :p"
        ),
        {"p": f"{schema.PARTITION_PREFIX}stage_%"},
    ).scalars()
    for table in sorted(names):
        conn.exec_driver_sql(f"ALTER TABLE {_ident(conn, table)} OWNER TO {owner}")


def _revoke_memberships(conn: sa.Connection, names: list[str]) -> None:
    """Drop every membership between the plan's roles (they are granted again after)."""
    pairs = conn.execute(
        sa.text(
            "SELECT g.rolname, m.rolname FROM pg_auth_members a "
            "JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
            "WHERE g.rolname = ANY(:names) AND m.rolname = ANY(:names)"
        ),
        {"names": names},
    ).all()
    for group, member in pairs:
        conn.exec_driver_sql(f"REVOKE {_ident(conn, group)} FROM {_ident(conn, member)}")


def drop(conn: sa.Connection, prefix: str) -> None:
    """Drop the plan's roles (tests' teardown): objects they own here go to the current user.

    Their grants and ownership in *other* databases must be gone first (those databases
    dropped), or PostgreSQL refuses.
    """
    require_postgres(conn)
    with translate_errors(f"drop roles {prefix}*"):
        for role in reversed(plan(prefix)):
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": role.name}
            ).first()
            if exists is None:
                continue
            name = _ident(conn, role.name)
            conn.exec_driver_sql(f"REASSIGN OWNED BY {name} TO CURRENT_USER")
            conn.exec_driver_sql(f"DROP OWNED BY {name}")
            conn.exec_driver_sql(f"DROP ROLE {name}")
