"""The CLI starts light: heavy modules load only in the subcommands that use them.

Each check runs in a fresh interpreter, so this session's own imports do not count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.storage import schema

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
# Never needed to read a user's list or to queue an event. numpy is not among them: the
# config's weights are built from the signal registry (compute.signals), whose formulas are
# numpy's; importing it costs about a tenth of a second.
HEAVY = ("matplotlib", "ray", "faiss", "pandas", "alembic", "tqdm", "scipy", "jobs.match")
# Not even needed to print the help.
DATABASE = ("sqlalchemy", "psycopg", "pydantic", "yaml")

PROBE = """
import json, sys
from jobs import cli
try:
    code = cli.main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(
    name for name in json.loads(sys.argv[2]) if name in sys.modules)}))
"""


def loaded_after(argv: list[str], watched: tuple[str, ...]) -> tuple[int, list[str]]:
    """Run ``matchjobs ARGV`` in a fresh interpreter; its exit code and the watched modules."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(watched)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"]


def test_help_imports_no_heavy_module_and_no_database_layer() -> None:
    """Regression: `matchjobs --help` took 5–9 s, importing every subcommand's dependencies
    (matplotlib, pandas, Ray, FAISS) through an eager subcommand table."""
    code, loaded = loaded_after(["--help"], HEAVY + DATABASE)
    assert code == 0
    assert loaded == []


def test_suggestions_and_event_import_no_heavy_module(db) -> None:
    """Regression: `matchjobs suggestions U` took 11.7 s, 10.7 s of it imports (pandas,
    matplotlib, Ray, FAISS), and `matchjobs event` 9.2 s."""
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.users), [{"id": 1, "seeking_mask": 2, "created_at": T0}])
    code, loaded = loaded_after(["--db", db.url, "suggestions", "1", "--json"], HEAVY)
    assert (code, loaded) == (0, [])
    code, loaded = loaded_after(["--db", db.url, "event", "quiz_submitted", "1"], HEAVY)
    assert (code, loaded) == (0, [])


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every action of ``parser`` and of its nested subcommands, with the command's name."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += [(f"{parser.prog} {name}", a) for _, a in _options(child)]
        elif not isinstance(action, argparse._HelpAction):
            found.append((parser.prog, action))
    return found


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_option_has_help_naming_its_default(command: str) -> None:
    """Regression: options such as `runs --limit` and `demo --users` had no help line, or a
    help line without their default."""
    parser, handlers = cli.build_parser([command])
    assert command in handlers
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for prog, action in _options(sub.choices[command]):
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{prog} {name} has no help"
        # An option that takes a value says what it is when not given (flags are off).
        if action.option_strings and action.nargs != 0 and not action.required:
            assert "default" in action.help, f"{prog} {name}: help does not name the default"


def test_evaluate_help_is_a_page_not_a_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: `matchjobs evaluate --help` printed the result's JSON schema."""
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert '"schema_version"' not in text and "METRICS" not in text
    assert len(text.splitlines()) < 80
