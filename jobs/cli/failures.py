"""What the CLI prints when a command fails: one line a person can act on.

Imported only on the error path. A database that cannot be reached, does not exist or has
no schema yet is recognised from the driver error anywhere in the cause chain, whether or
not the storage layer wrapped it, and named with what to do. ``-v`` adds the chain of causes,
``--debug`` (or ``MATCHJOBS_DEBUG=1``) the traceback.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import traceback

from jobs.errors import JobError, chain_parts


def report(exc: BaseException, url: str | None, *, verbose: bool, debug: bool) -> int:
    """Print ``exc`` for a person on stderr; the exit status (1). ``url``: the database's."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    problem = _database_problem(exc, url)
    text = problem or describe(exc, url)
    if verbose:
        text += "".join(f"\ncaused by {part}" for part in chain_parts(exc)[1:])
    elif not debug and problem is None and not isinstance(exc, JobError):
        # Not one of ours: a bug, or a failure nobody has named yet.
        text += " (rerun with --debug for the traceback)"
    print(f"matchjobs: error: {text}", file=sys.stderr)
    return 1


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _shown(url: str | None) -> str:
    from jobs.storage import engine as engine_mod

    return "the database" if url is None else engine_mod.redact(url)


def _database_problem(exc: BaseException, url: str | None) -> str | None:
    """A driver error that means the database is unreachable, absent or not set up."""
    for cause in _chain(exc):
        module = type(cause).__module__
        message = str(cause).strip()
        first = (message.splitlines() or [""])[0]
        if isinstance(cause, sqlite3.Error) or module.startswith("psycopg"):
            table = re.search(r'no such table: (\w+)|relation "(\w+)" does not exist', message)
            if table:
                return (
                    f"the database {_shown(url)} has no matchjobs schema yet (table "
                    f"{table.group(1) or table.group(2)} is missing); run "
                    f"`matchjobs --db {url} db upgrade`"
                )
            missing = re.search(r'database "([^"]+)" does not exist', message)
            if missing:
                name = missing.group(1)
                return (
                    f"database {name} does not exist on the server of {_shown(url)}; create it "
                    f"(`createdb {name}`, or CREATE DATABASE {name}), then run "
                    f"`matchjobs --db {url} db upgrade`"
                )
            if "Connection refused" in message or "could not translate host" in message:
                server = re.search(r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+)', message)
                where = f"{server.group(1)}:{server.group(2)}" if server else _shown(url)
                return (
                    f"cannot reach PostgreSQL at {where} ({first.split(':')[-1].strip()}); "
                    "is the server running, and are the host and port in --db right?"
                )
            if "password authentication failed" in message or re.search(
                r'role "[^"]+" does not exist', message
            ):
                return f"the server refused the login for {_shown(url)}: {first}"
            if "unable to open database file" in message:
                return (
                    f"cannot open the SQLite file of {_shown(url)}: its directory is missing or "
                    "not writable"
                )
    return None


def describe(exc: BaseException, url: str | None) -> str:
    """One line: what is wrong and, where we know it, what to do."""
    problem = _database_problem(exc, url)
    if problem is not None:
        return problem
    if isinstance(exc, JobError):
        return chain_parts(exc)[0]
    return f"unexpected {chain_parts(exc)[0]}"
