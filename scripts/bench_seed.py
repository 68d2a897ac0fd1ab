"""Benchmark ``matchjobs seed`` on PostgreSQL and record it in BENCHMARKS.md (section ``## Seed``).

Each run, in a new process (so that its peak RSS is the seed's alone), creates a scratch
database ``mj_bench_seed``, upgrades it and runs ``seed.seed`` — generation and COPY chunk by
chunk in one transaction, as ``matchjobs seed`` does — timing generation and each table's
writes, then drops the database. The median over the runs goes into BENCHMARKS.md; other
sections of that file are left as they are.

    .venv/bin/python scripts/bench_seed.py --users 100000 --runs 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import multiprocessing
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
INTRO = (
    "Seeding into PostgreSQL with `seed.seed`, as `matchjobs seed` does: generation (numpy) "
    f"and COPY writes through `bulk.insert_frame`, {seed.CHUNK_USERS:,} users a chunk (quiz "
    "answers and interests per slice of users, likes and ratings per group of whole regions), "
    "all in one transaction, into a freshly migrated database (tables keep their primary keys "
    "and indexes). Each run is a new process; its peak RSS (`ru_maxrss`) includes the "
    "interpreter and libraries (about 125 MB). One subsection per population size.\n"
)


def _scratch_url(admin_url: str, db_name: str) -> str:
    url = sa.engine.make_url(admin_url).set(database=db_name)
    return url.render_as_string(hide_password=False)


def one_run(admin_url: str, db_name: str, n_users: int, seed_value: int) -> dict[str, float]:
    """Seconds per phase and per table, and the peak RSS, of one seeding into a fresh scratch
    database. Run it in a new process: the peak RSS is the process's."""
    admin = engine_mod.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{db_name}"')
    engine = engine_mod.create_engine(_scratch_url(admin_url, db_name))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        migrate.upgrade(engine)
        timings["upgrade"] = time.perf_counter() - started
        result = seed.seed(engine, n_users=n_users, seed=seed_value)
        timings["generate"] = result.generate_seconds
        timings["write"] = result.write_seconds
        timings["total"] = result.generate_seconds + result.write_seconds
        timings["chunks"] = float(result.chunks)
        for name, seconds in result.table_write_seconds.items():
            timings[f"table:{name}"] = seconds
        for name, rows in result.rows.items():
            timings[f"rows:{name}"] = float(rows)
        timings["peak_rss_mb"] = benchmarks.peak_rss_mb()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        admin.dispose()
    return timings


def run_in_child(admin_url: str, db_name: str, n_users: int, seed_value: int) -> dict[str, float]:
    """:func:`one_run` in a new (spawned) process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(one_run, admin_url, db_name, n_users, seed_value).result()


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
    peaks = ", ".join(f"{run['peak_rss_mb']:,.0f}" for run in runs)
    total_rows = sum(int(runs[0][k]) for k in runs[0] if k.startswith("rows:"))
    lines = [
        f"### {n_users:,} users",
        "",
        f"Seed {seed_value}.",
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
        f"({total_rows / median('total'):,.0f} rows/s end to end) in {int(runs[0]['chunks'])} "
        f"chunks: generate {median('generate'):.1f} s, write {median('write'):.1f} s (COPY and "
        f"commit); schema upgrade {median('upgrade'):.1f} s, not counted",
        f"- **peak RSS {median('peak_rss_mb'):,.0f} MB** (per run: {peaks} MB)",
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
    parser.add_argument("--db-name", default=SCRATCH_DB, help=f"scratch database ({SCRATCH_DB})")
    parser.add_argument("--no-write", action="store_true", help="print, don't touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    admin = engine_mod.create_engine(args.admin_url)
    with admin.connect() as conn:
        pg_version = str(conn.exec_driver_sql("SHOW server_version").scalar_one())
    admin.dispose()

    load = os.getloadavg()[0]
    runs = []
    for i in range(args.runs):
        timings = run_in_child(args.admin_url, args.db_name, args.users, args.seed)
        runs.append(timings)
        print(
            f"run {i + 1}/{args.runs}: total {timings['total']:.1f}s "
            f"(generate {timings['generate']:.1f}s, write {timings['write']:.1f}s), "
            f"peak RSS {timings['peak_rss_mb']:,.0f} MB",
            file=sys.stderr,
        )
    command = (
        f".venv/bin/python scripts/bench_seed.py --users {args.users} --seed {args.seed} "
        f"--runs {args.runs}"
    )
    body = render(runs, args.users, args.seed, command, f"PostgreSQL {pg_version}", load)
    print(f"{SECTION}\n\n{INTRO}\n{body}")
    if not args.no_write:
        benchmarks.replace_subsection(BENCHMARKS, SECTION, INTRO, f"### {args.users:,} users", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
