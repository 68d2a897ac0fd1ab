"""Benchmark the quiz, interest and ratings jobs on PostgreSQL; record them in BENCHMARKS.md.

Creates a scratch database ``mj_bench_signals``, seeds it with ``jobs.tools.seed`` and runs each
signal job end to end through ``jobs.runner.execute`` (trigger ``nightly``, scope all) several
times: the first run writes every row, later runs are no-change reruns (every row compared,
none written). Then it times single-user runs (trigger ``event``) of random users; for the
ratings job a single run's scope is a (rater, rated profile) pair, as the "new rating" event
sends it. Figures per phase come from the runs' ``job_runs`` metadata. The section
``## Signal jobs`` of BENCHMARKS.md is replaced (others are left as they are); the scratch
database is dropped at the end.

    .venv/bin/python scripts/bench_signals.py --users 100000 --runs 3 --single 25
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.signals import interests, quiz, ratings
from jobs.storage import engine as engine_mod
from jobs.storage import schema
from jobs.tools import benchmarks, seed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRATCH_DB = "mj_bench_signals"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION = "## Signal jobs"
JOBS = {"quiz": quiz.run, "interests": interests.run, "ratings": ratings.run}
PHASES = ("load", "compute", "write")


def _scratch_url(admin_url: str, db_name: str) -> str:
    url = sa.engine.make_url(admin_url).set(database=db_name)
    return url.render_as_string(hide_password=False)


def _metadata(engine: sa.Engine, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        text = conn.execute(
            sa.select(schema.job_runs.c.metadata).where(schema.job_runs.c.id == run_id)
        ).scalar_one()
    return json.loads(text)


def timed_run(
    engine: sa.Engine, url: str, config: config_mod.Config, job: str, scope: Scope, trigger: str
) -> dict[str, Any]:
    started = time.perf_counter()
    run_id, _ = runner.execute(
        job, JOBS[job], engine=engine, database_url=url, config=config, scope=scope, trigger=trigger
    )
    return {"wall_s": time.perf_counter() - started, **_metadata(engine, run_id)}


def single_scopes(engine: sa.Engine, job: str, n: int, rng: np.random.Generator) -> list[Scope]:
    """``n`` event scopes: random active users, or random (rater, rated) pairs for ratings."""
    with engine.connect() as conn:
        if job == "ratings":
            # A prefix of the table, not DISTINCT over all of it (minutes at 1.5M rows).
            pairs = conn.execute(
                sa.select(schema.ratings.c.rater_id, schema.ratings.c.rated_id).limit(100_000)
            ).all()
            picks = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
            return [Scope.users(int(pairs[i][0]), int(pairs[i][1])) for i in picks]
        ids = conn.execute(sa.select(schema.users.c.id).where(schema.users.c.is_active)).all()
        picks = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
        return [Scope.users(int(ids[i][0])) for i in picks]


def _writes(meta: dict[str, Any]) -> str:
    parts = []
    for table, counts in meta["writes"].items():
        parts.append(
            f"{table}: +{counts['inserted']:,} ~{counts['updated']:,} -{counts['deleted']:,} "
            f"={counts['unchanged']:,}"
        )
    return "; ".join(parts)


def render(
    results: dict[str, dict[str, Any]],
    n_users: int,
    seed_value: int,
    seed_rows: dict[str, int],
    seed_s: float,
    command: str,
    pg_version: str,
) -> str:
    lines = [
        SECTION,
        "",
        f"The three signal jobs on {n_users:,} seeded users (`jobs.tools.seed`, seed {seed_value}: "
        + ", ".join(f"{seed_rows[t]:,} {t}" for t in ("quiz_answers", "user_interests", "ratings"))
        + f"; seeding took {seed_s:.0f} s, not counted) in PostgreSQL, each run end to end "
        "through `runner.execute` (ledger row, one transaction, commit). Run 1 writes every "
        "row into empty tables; runs 2+ are no-change reruns that read, recompute and compare "
        "every row and write none. Single-user runs are the event path (trigger `event`), "
        "on random active users; for ratings on random (rater, rated) pairs.",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: {os.cpu_count()} cores (nproc), {platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {pg_version}",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "- writes: +inserted ~updated -deleted =unchanged rows (from `bulk.sync_rows`); "
        "rows/s = rows read / wall time",
        "",
        "| job | run | wall s | load s | compute s | write s | users | rows read | rows/s | "
        "writes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for job, result in results.items():
        for i, meta in enumerate(result["batch"], start=1):
            kind = "first (writes)" if i == 1 else "rerun (no change)"
            phases = meta["phases_s"]
            lines.append(
                f"| {job} | {i} {kind} | {meta['wall_s']:.1f} | "
                + " | ".join(f"{phases.get(p, 0.0):.1f}" for p in PHASES)
                + f" | {meta['users']:,} | {meta['rows_read']:,} | "
                f"{meta['rows_read'] / meta['wall_s']:,.0f} | {_writes(meta)} |"
            )
    lines += [
        "",
        "| job | single-user runs | p50 ms | p95 ms | p50 load / compute / write ms |",
        "|---|---:|---:|---:|---|",
    ]
    for job, result in results.items():
        singles = result["single"]
        walls = [m["wall_s"] * 1000 for m in singles]
        phase_p50 = " / ".join(
            f"{statistics.median(m['phases_s'].get(p, 0.0) for m in singles) * 1000:.0f}"
            for p in PHASES
        )
        lines.append(
            f"| {job} | {len(singles)} | {statistics.median(walls):.0f} | "
            f"{float(np.percentile(walls, 95)):.0f} | {phase_p50} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3, help="batch runs per job (>= 2)")
    parser.add_argument("--single", type=int, default=25, help="single-user runs per job")
    parser.add_argument("--jobs", nargs="+", choices=sorted(JOBS), default=list(JOBS))
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--db-name", default=SCRATCH_DB, help=f"scratch database ({SCRATCH_DB})")
    parser.add_argument("--no-write", action="store_true", help="print, don't touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "$ .venv/bin/python scripts/bench_signals.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    admin = engine_mod.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        pg_version = "PostgreSQL " + str(conn.exec_driver_sql("SHOW server_version").scalar_one())
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{args.db_name}"')
    url = _scratch_url(args.admin_url, args.db_name)
    engine = engine_mod.create_engine(url)
    config = config_mod.load_config()
    rng = np.random.default_rng(args.seed)
    results: dict[str, dict[str, Any]] = {}
    try:
        seeded = seed.seed(engine, n_users=args.users, seed=args.seed)
        seed_s = seeded.generate_seconds + seeded.write_seconds
        print(f"seeded {args.users:,} users in {seed_s:.1f}s: {seeded.rows}", file=sys.stderr)
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
        for job in args.jobs:
            batch = []
            for i in range(args.runs):
                meta = timed_run(engine, url, config, job, Scope.all(), "nightly")
                batch.append(meta)
                print(
                    f"{job} run {i + 1}: {meta['wall_s']:.1f}s {meta['phases_s']} {_writes(meta)}",
                    file=sys.stderr,
                )
            singles = [
                timed_run(engine, url, config, job, scope, "event")
                for scope in single_scopes(engine, job, args.single, rng)
            ]
            walls = sorted(m["wall_s"] for m in singles)
            print(f"{job} single: p50 {statistics.median(walls) * 1000:.0f} ms", file=sys.stderr)
            results[job] = {"batch": batch, "single": singles}
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        admin.dispose()

    section = render(results, args.users, args.seed, seeded.rows, seed_s, command, pg_version)
    print(section)
    if not args.no_write:
        benchmarks.replace_section(BENCHMARKS, SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
