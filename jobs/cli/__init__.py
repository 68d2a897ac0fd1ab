"""The ``matchjobs`` command line.

Each subcommand parses its arguments, loads config, builds the engine and scope, calls a job
or storage function, and prints a one-line summary (or ``--json``). No computation, no SQL.

Start-up is kept cheap: :data:`COMMANDS` names each subcommand's one-line help and the
function that defines its arguments, and only the chosen subcommand's module is imported.
Those modules import their heavy dependencies (pandas, numpy, Ray, FAISS, matplotlib, the
jobs themselves) inside the handler, so ``--help`` loads none of them and ``suggestions``
loads SQLAlchemy and the driver only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from jobs.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from jobs import config as config_mod
    from jobs.context import JobResult, Scope

logger = logging.getLogger("jobs.cli")

DATABASE_ENV = "MATCHJOBS_DATABASE_URL"
# Set to 1 to print the traceback of an error, as --debug does.
DEBUG_ENV = "MATCHJOBS_DEBUG"
DEFAULT_DB_HELP = f"database URL (default: ${DATABASE_ENV}, else sqlite:///./matchjobs.db)"

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
    if arg is not None:
        return _checked_url(arg, "--db")
    if DATABASE_ENV in os.environ:
        value = os.environ[DATABASE_ENV]
        if not value.strip():
            raise ConfigError(f"{DATABASE_ENV} is set but empty; unset it or give a URL")
        return _checked_url(value, DATABASE_ENV)
    from jobs.storage import engine as engine_mod

    return f"sqlite:///{Path.cwd() / engine_mod.DEFAULT_SQLITE_FILE}"


def _checked_url(value: str, source: str) -> str:
    if "://" in value:
        return value
    # A file name is the commonest slip: name the URL the person most likely meant.
    path = Path(value).expanduser().absolute()
    raise ConfigError(
        f"{source} must be a database URL, not a path; got {value!r}: "
        f"did you mean sqlite:///{path}?"
    )


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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Env:
    """What a subcommand needs, built lazily from the global options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._url: str | None = None
        self._engine: sa.Engine | None = None
        self._config: config_mod.Config | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = database_url(self.args.db)
        return self._url

    def url_or_none(self) -> str | None:
        """The database URL, or ``None`` when the options do not give a valid one."""
        try:
            return self.url
        except ConfigError:
            return None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            from jobs.storage import engine as engine_mod

            self._engine = engine_mod.create_engine(self.url)
        return self._engine

    def reader(self) -> sa.Engine:
        """The engine for a command that only reads: refuses a database that is not there.

        Connecting to a missing SQLite file would create an empty one; a read then fails on
        a missing table and leaves that file behind.
        """
        from jobs.storage import engine as engine_mod

        missing = engine_mod.missing_sqlite_file(self.url)
        if missing is not None:
            raise ConfigError(
                f"no database at {missing}; create it with `matchjobs --db {self.url} db "
                "upgrade` (or run `matchjobs demo`), or point --db at an existing one"
            )
        return self.engine

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            from jobs import config as config_mod

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
        from jobs import progress

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
) -> tuple[int, JobResult]:
    from jobs import runner

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


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (default: text)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Rows as aligned text columns (numbers right-aligned), without pandas."""
    cells = [[str(h) for h in header], *([str(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        bool(rows) and all(_is_number(row[i]) for row in cells[1:]) for i in range(len(header))
    ]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------ the command table

Handler = Callable[[Env], int]


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help and ``module:function`` defining its arguments.

    The function takes the subcommand's parser, adds its arguments (and description) and
    returns the handler; it is imported only when that subcommand is on the command line.
    """

    help: str
    define: str


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "seed a population, run the nightly pipeline, show a user's suggestions",
        "jobs.cli.ops:define_demo",
    ),
    "db": Command(
        "create, upgrade or inspect the schema; create or update the roles",
        "jobs.cli.runs:define_db",
    ),
    "seed": Command(
        "write a deterministic synthetic population into the source tables",
        "jobs.cli.data:define_seed",
    ),
    "import": Command(
        "import a public data set into the source tables", "jobs.cli.data:define_import"
    ),
    "run": Command("run one job (all active users, or --user)", "jobs.cli.runs:define_run"),
    "score-user": Command(
        "recompute one user's suggestions in-process (no Ray)", "jobs.cli.match:define_score_user"
    ),
    "worker": Command("drain the event queue (runs until stopped)", "jobs.cli.ops:define_worker"),
    "event": Command("queue an event as the app would", "jobs.cli.ops:define_event"),
    "suggestions": Command(
        "a user's suggestions, exactly as the API reads them", "jobs.cli.ops:define_suggestions"
    ),
    "explain": Command(
        "why a pair scores what it does, or which filter keeps it apart",
        "jobs.cli.ops:define_explain",
    ),
    "runs": Command("recent job runs from the ledger", "jobs.cli.runs:define_runs"),
    "status": Command(
        "per-job health, coverage, staleness, event queue", "jobs.cli.ops:define_status"
    ),
    "evaluate": Command(
        "compare configs offline on hidden observed decisions (AUC, P/R/NDCG@k)",
        "jobs.cli.evaluation:define_evaluate",
    ),
    "tune": Command(
        "fit the signal weights and reciprocal fusion offline; write an experiment YAML",
        "jobs.cli.tuning:define_tune",
    ),
    "report": Command(
        "write a self-contained HTML report with plots (scores, funnel, runs, freshness)",
        "jobs.cli.report:define_report",
    ),
}

# Global options that take a value: the scan for the subcommand's name skips their values.
_VALUE_OPTIONS = ("--db", "--config", "--as-of")


def global_options(parser: argparse.ArgumentParser, *, late: bool = True) -> None:
    """The options accepted before the subcommand and, as ``late_*``, after it.

    Late ones default to SUPPRESS, so a subcommand that was not given one leaves the early
    value alone; :func:`_merge_late` folds them in.
    """
    prefix = "late_" if late else ""
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if late else {}
    parser.add_argument("--db", dest=f"{prefix}db", metavar="URL", help=DEFAULT_DB_HELP, **default)
    parser.add_argument(
        "--config",
        dest=f"{prefix}config",
        action="append",
        metavar="FILE",
        help="experiment YAML merged over configs/default.yaml "
        f"(repeatable; default: the files in ${CONFIG_ENV})",
        **default,
    )
    parser.add_argument(
        "--as-of",
        dest=f"{prefix}as_of",
        metavar="TIME",
        help="pin the time jobs compute at (ages, newness, row stamps), ISO 8601 such as "
        "2026-11-01T00:00Z, so reruns on the same data write the same rows (default: now; "
        "evaluate: the latest user activity)",
        **default,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest=f"{prefix}verbose",
        action="store_true",
        help="DEBUG logging, and the chain of causes of an error",
        **default,
    )
    parser.add_argument(
        "--debug",
        dest=f"{prefix}debug",
        action="store_true",
        help=f"print the traceback of an error (also: {DEBUG_ENV}=1)",
        **default,
    )


def _merge_late(args: argparse.Namespace) -> argparse.Namespace:
    late = {k[len("late_") :]: v for k, v in vars(args).items() if k.startswith("late_")}
    for key in late:
        delattr(args, f"late_{key}")
    if "db" in late:
        args.db = late["db"]
    if "as_of" in late:
        args.as_of = late["as_of"]
    if "config" in late:
        args.config = [*(args.config or ()), *late["config"]]
    args.verbose = args.verbose or late.get("verbose", False)
    args.debug = args.debug or late.get("debug", False) or os.environ.get(DEBUG_ENV) == "1"
    return args


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand on the command line: the first word that is not a global option."""
    words = iter(argv)
    for word in words:
        if word in _VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line that says where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(
    argv: Sequence[str] = (),
) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The parser, with the arguments of the subcommand named in ``argv`` (if any) defined."""
    parser = Parser(
        prog="matchjobs",
        description="Compute ranked suggestions (match_scores) for a dating app. "
        "`matchjobs COMMAND --help` describes a command.",
    )
    global_options(parser, late=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    chosen = _command_name(argv)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if name != chosen:
            continue
        module_name, function = command.define.split(":")
        define = getattr(importlib.import_module(module_name), function)
        handlers[name] = define(p)
        global_options(p)
    return parser, handlers


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # Which of its builds FAISS loaded (and which it could not) is not news to a user.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


SIGPIPE_STATUS = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by it


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, handlers = build_parser(argv)
    args = _merge_late(parser.parse_args(argv))
    configure_logging(args.verbose)
    env = Env(args)
    try:
        code = handlers[args.command](env)
        sys.stdout.flush()  # a closed pipe shows here, inside the handling below
        return code
    except BrokenPipeError:
        # `matchjobs … | head`: the reader took what it wanted. Stop quietly, with a SIGPIPE
        # death's status, and point stdout at nothing so the interpreter's last flush does
        # not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except KeyboardInterrupt:
        print("matchjobs: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the top of the CLI: one line, what is wrong and what to do
        from jobs.cli import failures

        return failures.report(exc, env.url_or_none(), verbose=args.verbose, debug=args.debug)
    finally:
        env.close()
