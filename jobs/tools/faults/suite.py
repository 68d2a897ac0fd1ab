"""Run the fault scenarios on fresh databases and write the figures (``scripts/faults``).

One invocation, one set of figures: every scenario gets a fresh seeded database (so one's
damage cannot hide another's), the scenarios run one after the other, and the report names
the command, the population, the load average before and after, and each scenario's
figures and invariant counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.tools.faults import scenarios
from jobs.tools.faults import world as world_mod

logger = logging.getLogger(__name__)

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def plan(
    launcher_rounds: int, changes: int, events: int, worker_trials: int
) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    """(name, scenario(world, database, clean_s)) in the order they run."""
    return [
        ("kill_one_actor", lambda w, db, clean: scenarios.kill_actors(w, beyond_limit=False)),
        (
            "kill_actors_beyond_limit",
            lambda w, db, clean: scenarios.kill_actors(w, beyond_limit=True),
        ),
        ("kill_driver", lambda w, db, clean: scenarios.kill_driver(w, clean)),
        ("pause_at_start", lambda w, db, clean: scenarios.pause_past_lease(w, "start")),
        ("pause_mid_write", lambda w, db, clean: scenarios.pause_past_lease(w, "write")),
        ("cut_mid_copy", lambda w, db, clean: scenarios.cut_connection(w, "copy")),
        ("cut_mid_commit", lambda w, db, clean: scenarios.cut_connection(w, "commit")),
        ("terminate_copies", lambda w, db, clean: scenarios.terminate_backends(w, db, "copy")),
        ("terminate_all", lambda w, db, clean: scenarios.terminate_backends(w, db, "all")),
        (
            "exclusions_during_nightly",
            lambda w, db, clean: scenarios.exclusions_during_nightly(w, changes),
        ),
        (
            "launcher_storm",
            lambda w, db, clean: scenarios.launcher_storm(w, 10, launcher_rounds),
        ),
        ("event_storm", lambda w, db, clean: scenarios.event_storm(w, events)),
        (
            "kill_worker",
            lambda w, db, clean: scenarios.kill_worker(w, worker_trials, max(10, events // 100)),
        ),
    ]


def run(
    admin_url: str,
    *,
    users: int,
    seed: int,
    launcher_rounds: int,
    changes: int,
    events: int,
    worker_trials: int,
    only: list[str],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    workroot = Path(tempfile.mkdtemp(prefix="matchjobs-faults-"))
    databases = world_mod.scratch_databases(admin_url)
    try:
        for name, scenario in plan(launcher_rounds, changes, events, worker_trials):
            if only and name not in only:
                continue
            database = next(databases)
            world = world_mod.prepare(database.url, workroot / name, n_users=users, seed=seed)
            try:
                clean = scenarios.clean_nightly(world)
                started = time.monotonic()
                figures = scenario(world, database.name, clean["seconds"])
                figures["scenario_s"] = round(time.monotonic() - started, 1)
                figures["clean_nightly_s"] = clean["seconds"]
            except Exception as exc:  # a scenario that cannot run is a finding, not a crash
                logger.exception("scenario %s failed", name, extra={"action": "faults.error"})
                figures = {"error": f"{type(exc).__name__}: {exc}", "violations": 1}
            finally:
                world_mod.stop_all()
                world.engine.dispose()
            results[name] = figures
            print(f"{name}: violations {figures['violations']}", file=sys.stderr, flush=True)
    finally:
        databases.close()
    return results


def write_report(path: Path, header: dict[str, Any], results: dict[str, Any]) -> None:
    lines = [
        "# Reliability: the fault suite's figures",
        "",
        "Written by `scripts/faults` (jobs/tools/faults); every figure below comes from the",
        "one invocation named here. Each scenario ran on a fresh seeded PostgreSQL database,",
        "after one clean nightly; `violations` sums the independent SQL invariants",
        "(jobs/storage/invariants.py), the scenario's own promises and the reader's bad reads.",
        "",
        f"- command: `{header['command']}`",
        f"- when: {header['when']}, {header['users']} users, seed {header['seed']}",
        f"- load average (1, 5, 15 min): before {header['load_before']}, "
        f"after {header['load_after']}; {os.cpu_count()} cores",
        f"- total: {header['seconds']} s; violations in all: {header['violations']}",
        "",
        "| scenario | violations | key figures |",
        "|---|---|---|",
    ]
    for name, figures in results.items():
        key = {
            k: v
            for k, v in figures.items()
            if k not in ("checks", "broken", "reader", "digest", "violations")
        }
        lines.append(f"| {name} | {figures['violations']} | {_compact(key)} |")
    lines += ["", "## Reader (the API query in a loop through each scenario)", ""]
    lines += [
        "| scenario | reads | bad reads | p99 idle ms | p99 during writes ms |",
        "|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        reader = figures.get("reader")
        if not reader:
            continue
        latency = reader["latency"]
        lines.append(
            f"| {name} | {reader['reads']} | {reader['bad_reads']} | "
            f"{latency.get('idle', {}).get('p99_ms', '–')} | "
            f"{latency.get('writes', {}).get('p99_ms', '–')} |"
        )
    lines += ["", "## Every figure", "", "```json", json.dumps(results, indent=1, default=str)]
    lines += ["```", ""]
    path.write_text("\n".join(lines))


def _compact(values: dict[str, Any]) -> str:
    return "; ".join(f"{k} {v}" for k, v in values.items()).replace("|", "/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__)
    parser.add_argument(
        "--admin-url", default=os.environ.get("MATCHJOBS_TEST_PG_URL", DEFAULT_ADMIN_URL)
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--launcher-rounds", type=int, default=100)
    parser.add_argument("--changes", type=int, default=60)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--worker-trials", type=int, default=20)
    parser.add_argument("--only", action="append", default=[], help="run only this scenario")
    parser.add_argument("--out", type=Path, default=None, help="write RELIABILITY.md here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so the scenarios' children are killed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    load_before = tuple(round(x, 2) for x in os.getloadavg())
    started = time.monotonic()
    results = run(
        args.admin_url,
        users=args.users,
        seed=args.seed,
        launcher_rounds=args.launcher_rounds,
        changes=args.changes,
        events=args.events,
        worker_trials=args.worker_trials,
        only=args.only,
    )
    total = sum(int(r["violations"]) for r in results.values())
    header = {
        "command": "scripts/faults " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "users": args.users,
        "seed": args.seed,
        "load_before": load_before,
        "load_after": tuple(round(x, 2) for x in os.getloadavg()),
        "seconds": round(time.monotonic() - started, 1),
        "violations": total,
    }
    if args.out is not None:
        write_report(args.out, header, results)
    print(json.dumps({"header": header, "results": results}, default=str, indent=1))
    return 0 if total == 0 else 1
