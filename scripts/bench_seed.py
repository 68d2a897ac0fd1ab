"""Benchmark ``matchjobs seed`` on PostgreSQL and record it in BENCHMARKS.md (section ``## Seed``).

Each run creates a scratch database ``mj_bench_seed``, upgrades it, generates the population
and writes it in one transaction (timing each table), then drops the database. The median
over the runs goes into BENCHMARKS.md; other sections of that file are left as they are.

    .venv/bin/python scripts/bench_seed.py --users 100000 --runs 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from jobs.storage import engine as engine_mod
from jobs.storage import migrate, source
from jobs.tools import benchmarks, seed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRATCH_DB = "mj_bench_seed"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION = "## Seed"


def _scratch_url(admin_url: str) -> str:
    url = sa.engine.make_url(admin_url).set(database=SCRATCH_DB)
    return url.render_as_string(hide_password=False)


def one_run(admin_url: str, n_users: int, seed_value: int) -> dict[str, float]:
    """Seconds per phase and per table for one seeding into a fresh scratch database."""
    admin = engine_mod.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{SCRATCH_DB}"')
    engine = engine_mod.create_engine(_scratch_url(admin_url))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        migrate.upgrade(engine)
        timings["upgrade"] = time.perf_counter() - started

        started = time.perf_counter()
        frames = seed.generate(n_users, seed_value, seed.DEFAULT_NOW)
        timings["generate"] = time.perf_counter() - started

        write_started = time.perf_counter()
        with engine.begin() as conn:
            if source.count_users(conn):
                raise RuntimeError(f"scratch database {SCRATCH_DB} is not empty")
            for name in source.WRITE_ORDER:
                table_started = time.perf_counter()
                seed.write(conn, {name: frames[name]})
                timings[f"table:{name}"] = time.perf_counter() - table_started
            commit_started = time.perf_counter()
        timings["commit"] = time.perf_counter() - commit_started
        timings["write"] = time.perf_counter() - write_started
        timings["total"] = timings["generate"] + timings["write"]
        for name, frame in frames.items():
            timings[f"rows:{name}"] = float(len(frame))
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        admin.dispose()
    return timings


def render(
    runs: list[dict[str, float]],
    n_users: int,
    seed_value: int,
    command: str,
    pg_version: str,
    load: float,
) -> str:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    totals = ", ".join(f"{run['total']:.1f}" for run in runs)
    total_rows = sum(int(runs[0][k]) for k in runs[0] if k.startswith("rows:"))
    lines = [
        SECTION,
        "",
        f"Seeding {n_users:,} users (seed {seed_value}) into PostgreSQL: generation (numpy) plus "
        "one transaction of COPY writes through `bulk.insert_frame`, into a freshly migrated "
        "database (tables keep their primary keys and indexes).",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: {os.cpu_count()} cores (nproc), {platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {pg_version}",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; load average at start "
        f"{load:.2f} (other work shares these cores)",
        f"- runs: {len(runs)}; figures are medians (total per run: {totals} s)",
        f"- **total {median('total'):.1f} s** for {total_rows:,} rows "
        f"({total_rows / median('total'):,.0f} rows/s end to end): generate "
        f"{median('generate'):.1f} s, write {median('write'):.1f} s "
        f"(commit {median('commit'):.2f} s); schema upgrade {median('upgrade'):.1f} s, not counted",
        "",
        "| table | rows | write s | rows/s |",
        "|---|---:|---:|---:|",
    ]
    for name in source.WRITE_ORDER:
        rows = int(runs[0][f"rows:{name}"])
        seconds = median(f"table:{name}")
        rate = f"{rows / seconds:,.0f}" if seconds > 0 and rows >= 1000 else "-"
        lines.append(f"| {name} | {rows:,} | {seconds:.2f} | {rate} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--no-write", action="store_true", help="print, don't touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    admin = engine_mod.create_engine(args.admin_url)
    with admin.connect() as conn:
        pg_version = str(conn.exec_driver_sql("SHOW server_version").scalar_one())
    admin.dispose()

    load = os.getloadavg()[0]
    runs = []
    for i in range(args.runs):
        timings = one_run(args.admin_url, args.users, args.seed)
        runs.append(timings)
        print(
            f"run {i + 1}/{args.runs}: total {timings['total']:.1f}s "
            f"(generate {timings['generate']:.1f}s, write {timings['write']:.1f}s)",
            file=sys.stderr,
        )
    command = (
        f".venv/bin/python scripts/bench_seed.py --users {args.users} --seed {args.seed} "
        f"--runs {args.runs}"
    )
    section = render(runs, args.users, args.seed, command, f"PostgreSQL {pg_version}", load)
    print(section)
    if not args.no_write:
        benchmarks.replace_section(BENCHMARKS, SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
