"""The schema and the job ledger: ``matchjobs db``, ``matchjobs run``, ``matchjobs runs``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs import cli
from jobs.errors import ConfigError


def cmd_db(env: cli.Env) -> int:
    from jobs.storage import engine as engine_mod
    from jobs.storage import migrate

    if env.args.db_command == "roles":
        return cmd_db_roles(env)
    if env.args.db_command == "upgrade":
        revision = migrate.upgrade(env.engine)
        summary = f"database at revision {revision} ({engine_mod.redact(env.url)})"
        cli.emit(env.args, summary, {"revision": revision})
    else:
        current = migrate.current_revision(env.reader())
        head = migrate.head_revision()
        cli.emit(env.args, f"current {current}, head {head}", {"current": current, "head": head})
    return 0


def cmd_db_roles(env: cli.Env) -> int:
    from jobs.storage import engine as engine_mod
    from jobs.storage import roles

    # SQLite: ConfigError, exit 1 (not 0): a deploy script that asked for least privilege
    # must not go on believing it has it.
    roles.require_postgres(env.engine)
    with env.engine.begin() as conn:
        made = roles.apply(conn, env.args.prefix)
    if not env.args.json:
        for role in made:
            print(f"{role.name:<24} {'login' if role.login else 'nologin':<8} {role.purpose}")
    cli.emit(
        env.args,
        f"{len(made)} roles up to date in {engine_mod.redact(env.url)}; set passwords with "
        "psql's \\password ROLE",
        [
            {
                "role": r.name,
                "login": r.login,
                "purpose": r.purpose,
                "tables": r.tables,
                "member_of": list(r.member_of),
            }
            for r in made
        ],
    )
    return 0


def define_db(parser: argparse.ArgumentParser) -> cli.Handler:
    from jobs.storage import roles

    parser.description = (
        "upgrade: create or upgrade the schema. current: its revision. roles "
        "(PostgreSQL): create or update the least-privilege roles (API reader, app writer, one "
        "per job, worker, nightly, owner) and their grants; idempotent, rerun after upgrade."
    )
    parser.add_argument(
        "db_command", choices=["upgrade", "current", "roles"], help="what to do (see above)"
    )
    parser.add_argument(
        "--prefix",
        default=roles.DEFAULT_PREFIX,
        help=f"roles: prefix of every role name (default {roles.DEFAULT_PREFIX})",
    )
    cli.add_json(parser)
    return cmd_db


def cmd_run(env: cli.Env) -> int:
    from jobs.context import Scope

    for flag, given in (
        ("--force-swap", env.args.force_swap),
        ("--replace-version", env.args.replace_version),
    ):
        if given and (env.args.job not in ("match", "nightly") or env.args.user):
            raise ConfigError(
                f"{flag} applies to `run match` and `run nightly` over all users; "
                f"got `run {env.args.job}`" + (" --user" if env.args.user else "")
            )
    scope = Scope.users(*env.args.user) if env.args.user else Scope.all()
    run_id, result = cli.run_job(
        env,
        env.args.job,
        scope,
        env.args.trigger,
        force_swap=env.args.force_swap,
        replace_version=env.args.replace_version,
    )
    skipped = sum(result.skipped.values())
    warned = f", {len(result.warnings)} warnings (see `matchjobs runs`)" if result.warnings else ""
    cli.emit(
        env.args,
        f"{env.args.job} run {run_id}: {result.users} users, {result.rows_read} rows read, "
        f"{result.rows_written} rows written, {skipped} skipped{warned}",
        {"run_id": run_id, **result.__dict__},
    )
    return 0


def define_run(parser: argparse.ArgumentParser) -> cli.Handler:
    from jobs import runner

    parser.description = (
        "Run one job under the job_runs ledger: a signal job (quiz, interests, ratings), the "
        "match job, the feed job, or the whole nightly pipeline. Prints a one-line summary."
    )
    parser.add_argument("job", choices=sorted(runner.JOB_MODULES), help="the job to run")
    parser.add_argument(
        "--user",
        type=int,
        action="append",
        metavar="ID",
        help="restrict to user ID (repeatable; default: all active users)",
    )
    parser.add_argument(
        "--trigger",
        choices=runner.TRIGGERS,
        default="on_demand",
        help="recorded in job_runs (default on_demand)",
    )
    parser.add_argument(
        "--force-swap",
        action="store_true",
        help="match/nightly: publish the output even if it leaves most users without a list "
        "(default: refuse)",
    )
    parser.add_argument(
        "--replace-version",
        action="store_true",
        help="match/nightly: rewrite algorithm_version although its rows were scored by "
        "another config (default: refused, naming both scoring hashes)",
    )
    cli.add_json(parser, "the summary")
    return cmd_run


def _decoded(value: Any) -> Any:
    """``job_runs.metadata`` as the object it holds (SQLite returns the JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def cmd_runs(env: cli.Env) -> int:
    from jobs.storage import ledger

    frame = ledger.recent_runs(env.reader(), limit=env.args.limit, job_name=env.args.job)
    if env.args.json:
        records = json.loads(frame.to_json(orient="records", date_format="iso"))
        for record in records:
            if "metadata" in record:
                record["metadata"] = _decoded(record["metadata"])
        cli.emit(env.args, "", records)
        return 0
    if frame.empty:
        print("no runs yet")
        return 0
    shown = frame[
        [
            "id",
            "job_name",
            "status",
            "trigger",
            "scope",
            "started_at",
            "duration_ms",
            "attempt",
            "algorithm_version",
            "error",
        ]
    ].copy()
    shown["started_at"] = shown["started_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    shown["error"] = shown["error"].fillna("").astype(str).str.split("\n").str[0].str[:60]
    print(shown.to_string(index=False))
    return 0


def define_runs(parser: argparse.ArgumentParser) -> cli.Handler:
    from jobs import runner

    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="newest N runs (default 20)"
    )
    parser.add_argument(
        "--job", choices=runner.LEDGER_NAMES, help="only this job's runs (default: every job)"
    )
    cli.add_json(parser, "the runs (metadata as objects)")
    return cmd_runs
