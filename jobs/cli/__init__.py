"""The ``matchjobs`` command line.

Each subcommand parses its arguments, loads config, builds the engine and scope, calls a job
or storage function, and prints a one-line summary (or ``--json``). No computation, no SQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobs import config as config_mod
from jobs import progress, runner
from jobs.context import Scope
from jobs.errors import ConfigError, JobError
from jobs.storage import engine as engine_mod
from jobs.storage import ledger, migrate, roles

logger = logging.getLogger("jobs.cli")

DATABASE_ENV = "MATCHJOBS_DATABASE_URL"
# Experiment files for every command of a process that has no --config: how a cluster's
# nodes give `ray job submit`'s unchanged entrypoint their settings.
CONFIG_ENV = "MATCHJOBS_CONFIG"


def config_files(args: list[str] | None) -> list[str]:
    """``--config`` files, else the ``os.pathsep``-separated ``$MATCHJOBS_CONFIG``."""
    if args:
        return args
    return [path for path in os.environ.get(CONFIG_ENV, "").split(os.pathsep) if path.strip()]


def database_url(arg: str | None) -> str:
    """``--db``, else ``$MATCHJOBS_DATABASE_URL``, else an SQLite file in the working dir."""
    if arg:
        return arg
    if DATABASE_ENV in os.environ:
        value = os.environ[DATABASE_ENV]
        if not value.strip():
            raise ConfigError(f"{DATABASE_ENV} is set but empty; unset it or give a URL")
        return value
    return f"sqlite:///{Path.cwd() / engine_mod.DEFAULT_SQLITE_FILE}"


def parse_now(text: str, option: str = "--now") -> dt.datetime:
    """A time option (``--now``, ``--as-of``) as an aware UTC datetime (naive = UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{option} must be an ISO 8601 time such as 2026-11-01T00:00Z; got {text!r}"
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class Env:
    """What a subcommand needs, built lazily from the global options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = database_url(args.db)
        self._engine = None
        self._config: config_mod.Config | None = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self._engine = engine_mod.create_engine(self.url)
        return self._engine

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            self._config = config_mod.load_config(config_files(self.args.config))
        return self._config

    def close(self) -> None:
        """Return pooled connections, so a CLI process leaves none behind."""
        if self._engine is not None:
            self._engine.dispose()

    @property
    def as_of(self) -> dt.datetime | None:
        """``--as-of`` as an aware UTC time, or None (each run follows the wall clock)."""
        text = getattr(self.args, "as_of", None)
        return None if text is None else parse_now(text, "--as-of")

    @property
    def show_progress(self) -> bool:
        return progress.interactive() and not getattr(self.args, "json", False)


def emit(args: argparse.Namespace, summary: str, data: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(summary)


def run_job(
    env: Env,
    job: str,
    scope: Scope,
    trigger: str,
    *,
    force_swap: bool = False,
    replace_version: bool = False,
) -> tuple[int, Any]:
    config = env.config  # a bad config stops here, before the ledger or any table is written
    as_of = env.as_of  # so does a bad --as-of
    return runner.execute(
        job,
        runner.job_function(job),
        engine=env.engine,
        database_url=env.url,
        config=config,
        scope=scope,
        trigger=trigger,
        show_progress=env.show_progress,
        force_swap=force_swap,
        replace_version=replace_version,
        as_of=as_of,
    )


# ------------------------------------------------------------------------ subcommands


def cmd_db(env: Env) -> int:
    if env.args.db_command == "roles":
        return cmd_db_roles(env)
    if env.args.db_command == "upgrade":
        revision = migrate.upgrade(env.engine)
        emit(
            env.args,
            f"database at revision {revision} ({engine_mod.redact(env.url)})",
            {"revision": revision},
        )
    else:
        current = migrate.current_revision(env.engine)
        head = migrate.head_revision()
        emit(env.args, f"current {current}, head {head}", {"current": current, "head": head})
    return 0


def cmd_db_roles(env: Env) -> int:
    # SQLite: ConfigError, exit 1 (not 0): a deploy script that asked for least privilege
    # must not go on believing it has it.
    roles.require_postgres(env.engine)
    with env.engine.begin() as conn:
        made = roles.apply(conn, env.args.prefix)
    if not env.args.json:
        for role in made:
            print(f"{role.name:<24} {'login' if role.login else 'nologin':<8} {role.purpose}")
    emit(
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


def cmd_run(env: Env) -> int:
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
    run_id, result = run_job(
        env,
        env.args.job,
        scope,
        env.args.trigger,
        force_swap=env.args.force_swap,
        replace_version=env.args.replace_version,
    )
    skipped = sum(result.skipped.values())
    warned = f", {len(result.warnings)} warnings (see `matchjobs runs`)" if result.warnings else ""
    emit(
        env.args,
        f"{env.args.job} run {run_id}: {result.users} users, {result.rows_read} rows read, "
        f"{result.rows_written} rows written, {skipped} skipped{warned}",
        {"run_id": run_id, **result.__dict__},
    )
    return 0


def cmd_runs(env: Env) -> int:
    frame = ledger.recent_runs(env.engine, limit=env.args.limit, job_name=env.args.job)
    if env.args.json:
        emit(env.args, "", json.loads(frame.to_json(orient="records", date_format="iso")))
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


Handler = Callable[[Env], int]


def add_as_of(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """The ``--as-of`` option, global or repeated on a subcommand (which then wins)."""
    parser.add_argument(
        "--as-of",
        metavar="TIME",
        # SUPPRESS: a subcommand without it keeps the global value instead of resetting it.
        default=argparse.SUPPRESS if subcommand else None,
        help="pin the time jobs compute at (ages, newness, row stamps), ISO 8601 such as "
        "2026-11-01T00:00Z, so reruns on the same data write the same rows (default: now; "
        "evaluate: the latest user activity)",
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="matchjobs",
        description="Compute ranked suggestions (match_scores) for a dating app.",
    )
    parser.add_argument("--db", help=f"database URL (default: ${DATABASE_ENV} or ./matchjobs.db)")
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="experiment YAML merged over configs/default.yaml "
        f"(repeatable; default: the files in ${CONFIG_ENV})",
    )
    add_as_of(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="DEBUG logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}

    db = sub.add_parser(
        "db",
        help="create, upgrade or inspect the schema; create or update the roles",
        description="upgrade: create or upgrade the schema. current: its revision. roles "
        "(PostgreSQL): create or update the least-privilege roles (API reader, app writer, one "
        "per job, worker, nightly, owner) and their grants; idempotent, rerun after upgrade.",
    )
    db.add_argument("db_command", choices=["upgrade", "current", "roles"])
    db.add_argument(
        "--prefix",
        default=roles.DEFAULT_PREFIX,
        help=f"roles: prefix of every role name (default {roles.DEFAULT_PREFIX})",
    )
    db.add_argument("--json", action="store_true")
    handlers["db"] = cmd_db

    run = sub.add_parser("run", help="run one job (all active users, or --user)")
    run.add_argument("job", choices=sorted(runner.JOB_MODULES))
    run.add_argument("--user", type=int, action="append", help="restrict to user ID (repeatable)")
    run.add_argument("--trigger", choices=runner.TRIGGERS, default="on_demand")
    run.add_argument(
        "--force-swap",
        action="store_true",
        help="match/nightly: publish the output even if it leaves most users without a list",
    )
    run.add_argument(
        "--replace-version",
        action="store_true",
        help="match/nightly: rewrite algorithm_version although its rows were scored by "
        "another config (default: refused, naming both scoring hashes)",
    )
    add_as_of(run, subcommand=True)
    run.add_argument("--json", action="store_true")
    handlers["run"] = cmd_run

    runs = sub.add_parser("runs", help="recent job runs")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--job", choices=runner.JOB_NAMES)
    runs.add_argument("--json", action="store_true")
    handlers["runs"] = cmd_runs

    for register in _EXTENSIONS:
        register(sub, handlers)
    return parser, handlers


# Subcommands defined in other modules register here: (subparsers, handlers) -> None.
_EXTENSIONS: list[Callable[[Any, dict[str, Handler]], None]] = []


def _load_extensions() -> None:
    for name in (
        "jobs.cli.data",
        "jobs.cli.match",
        "jobs.cli.ops",
        "jobs.cli.evaluation",
        "jobs.cli.tuning",
        "jobs.cli.report",
    ):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if module.register not in _EXTENSIONS:
            _EXTENSIONS.append(module.register)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)


SIGPIPE_STATUS = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by it


def main(argv: Sequence[str] | None = None) -> int:
    _load_extensions()
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    env: Env | None = None
    try:
        env = Env(args)
        status = handlers[args.command](env)
        sys.stdout.flush()  # a reader that has gone (`| head`) shows here, not at exit
        return status
    except BrokenPipeError:
        # The reader took what it wanted: stop quietly, with a SIGPIPE death's status, and
        # point stdout at nothing so the interpreter's last flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except JobError as exc:
        # One line (what is wrong, what to do); -v adds the chain of causes.
        text = runner.error_chain(exc) if args.verbose else runner.chain_parts(exc)[0]
        print(f"matchjobs: error: {text}", file=sys.stderr)
        return 1
    finally:
        if env is not None:
            env.close()
