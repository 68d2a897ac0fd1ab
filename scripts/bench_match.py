"""Benchmark the match job on a seeded population on PostgreSQL; record it in BENCHMARKS.md.

    .venv/bin/python scripts/bench_match.py --users 100000 [--skip-seed] [--runs 3]

Creates (or reuses with --skip-seed) the database ``mj_bench_match``, seeds it with
``jobs.tools.seed`` (seed 1) and runs the signal jobs, then measures, in one invocation and side
by side:

- the nightly through Ray end to end, ``--runs`` times (time per phase from each run's
  ``job_runs`` metadata, peak RSS of the driver and the actors, the recall audit);
- the write floor, ``--runs`` times: the same output rows, encoded by the production
  encoder (``scores.encode_copy_binary``, in ``COPY_CHUNK_ROWS`` chunks), binary-COPYed by
  one connection into a fresh table without key or index — and the same payload on two
  connections at once;
- the compute baseline: exhaustive exact scoring of a user sample against the pipeline;
- the single-user warm path (population and indexes loaded): p50/p95 of compute alone and
  of compute + replace in one transaction; and one cold ``matchjobs score-user`` call.

Figures are medians; the section ``## Match job`` of BENCHMARKS.md is replaced.
Run it with nothing else heavy on the machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import pipeline
from jobs.match import core as match
from jobs.storage import engine as engine_mod
from jobs.storage import migrate, scores
from jobs.storage import population as population_store
from jobs.tools import benchmarks, seed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "mj_bench_match"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION = "## Match job"


def create_database(admin_url: str, name: str) -> str:
    admin = engine_mod.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return database_url(admin_url, name)


def database_url(admin_url: str, name: str) -> str:
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def seed_with_signals(url: str, n_users: int) -> None:
    engine = engine_mod.create_engine(url)
    config = config_mod.load_config()
    seed.seed(engine, n_users=n_users, seed=1)
    for job in pipeline.SIGNAL_JOBS:  # the likes job too: behaviour signals as served
        benchmarks.run_job(engine, config, job)
    engine.dispose()


def fresh_table(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_copy")
        conn.exec_driver_sql("CREATE TABLE bench_copy (LIKE match_scores)")


def copy_floor(engine: sa.Engine, frame: pd.DataFrame, config: config_mod.Config) -> dict[str, Any]:
    """Encode ``frame`` as the nightly does, then COPY it: on one connection, then on two."""
    started = time.perf_counter()
    payloads = list(scores.encode_chunks(frame, config.algorithm_version, seed.DEFAULT_NOW))
    encode_s = time.perf_counter() - started
    fresh_table(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        scores.copy_encoded(conn, "bench_copy", payloads)
    copy_s = time.perf_counter() - started
    fresh_table(engine)
    halves = [payloads[0::2], payloads[1::2]]

    def copy_half(half: list[bytes]) -> None:
        with engine.begin() as conn:
            scores.copy_encoded(conn, "bench_copy", half)

    started = time.perf_counter()
    threads = [threading.Thread(target=copy_half, args=(half,)) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    two_s = time.perf_counter() - started
    payload_gb = sum(map(len, payloads)) / 1e9
    del payloads
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE bench_copy")
    return {
        "encode_s": encode_s,
        "copy_s": copy_s,
        "floor_s": encode_s + copy_s,
        "copy_two_connections_s": two_s,
        "payload_gb": payload_gb,
    }


def single_user_figures(
    engine: sa.Engine, config: config_mod.Config, warm_users: int, exhaustive_users: int
) -> dict[str, Any]:
    import faiss

    settings = match.settings_from_config(config)
    with engine.connect() as conn:
        guard = population_store.filter_snapshot(conn)
        pop, _, _ = match.load_clean(conn, seed.DEFAULT_NOW, settings)
    indexes = match.build_indexes(pop, settings)
    rng = np.random.default_rng(5)
    sample = np.sort(rng.choice(pop.n_users, exhaustive_users, replace=False))
    started = time.perf_counter()
    match.exhaustive_top_k(pop, sample, settings)
    exhaustive = time.perf_counter() - started
    started = time.perf_counter()
    match.score_rows(pop, indexes, sample, settings)
    pipeline = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    writer = engine_mod.writer(engine)
    with_write, compute_only = [], []
    for row in rng.choice(pop.n_users, warm_users, replace=False):
        started = time.perf_counter()
        output = match.score_rows(pop, indexes, np.array([row], dtype=np.int64), settings)
        compute_only.append(1000 * (time.perf_counter() - started))
        with writer.begin() as conn:
            scores.replace_user_sets(
                conn,
                output.user_ids,
                output.frame,
                version=settings.version,
                computed_at=seed.DEFAULT_NOW,
                guard=guard,
            )
        with_write.append(1000 * (time.perf_counter() - started))
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs",
            "--db",
            engine.url.render_as_string(hide_password=False),
            "score-user",
            str(pop.user_ids[sample[0]]),
        ],
        check=True,
        env={**os.environ, "CI": "1"},
        capture_output=True,
    )
    return {
        "exhaustive_ms_per_user": 1000 * exhaustive / sample.size,
        "pipeline_ms_per_user": 1000 * pipeline / sample.size,
        "exhaustive_users": int(sample.size),
        "warm_n": warm_users,
        "compute_p50": float(np.percentile(compute_only, 50)),
        "compute_p95": float(np.percentile(compute_only, 95)),
        "with_write_p50": float(np.percentile(with_write, 50)),
        "with_write_p95": float(np.percentile(with_write, 95)),
        "cold_cli_s": time.perf_counter() - started,
    }


def render(
    nightlies: list[dict[str, Any]],
    floors: list[dict[str, Any]],
    single: dict[str, Any],
    rows: int,
    command: str,
    pg_version: str,
    load: tuple[float, float],
) -> str:
    def med(runs: list[dict[str, Any]], *path: str) -> float:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value[key]
            values.append(float(value))
        return statistics.median(values)

    durations = [run["duration_s"] for run in nightlies]
    floor_runs = [run["floor_s"] for run in floors]
    nightly = med(nightlies, "duration_s")
    floor = med(floors, "floor_s")
    two = med(floors, "copy_two_connections_s")
    last = nightlies[-1]
    funnel, shards = last["funnel"], last["shards"]
    phases = {name: med(nightlies, "phases_s", name) for name in last["phases_s"]}
    lines = [
        SECTION,
        "",
        f"Nightly match run on the {last['users']:,} users left after cleaning a seeded "
        "population (`jobs.tools.seed`, seed 1) on PostgreSQL, default config (`top_k` 200, "
        "exact blocked ranking, 2 Ray actors × 1 CPU, 2,000-user shards), and beside it the "
        "write floor: the same output rows encoded by the nightly's own encoder and "
        "binary-COPYed into a fresh table without key or index. One invocation measures "
        "everything below; figures are medians of the runs.",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, {pg_version}",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; load average "
        f"{load[0]:.2f} at start, {load[1]:.2f} at the end",
        f"- nightly runs: {', '.join(f'{d:.1f}' for d in durations)} s; floor runs "
        f"(encode + COPY): {', '.join(f'{f:.1f}' for f in floor_runs)} s",
        "",
        "| figure | value |",
        "|---|---|",
        f"| **nightly end to end** (`job_runs` duration) | **{nightly:.1f} s** |",
        "| · phases: "
        + " / ".join(phases)
        + " | "
        + " / ".join(f"{v:.1f}" for v in phases.values())
        + " s (load and start_ray run at the same time) |",
        f"| · actors, summed: compute / write (encode + COPY into the stage) | "
        f"{med(nightlies, 'shards', 'compute_s'):.1f} / {med(nightlies, 'shards', 'write_s'):.1f}"
        " s |",
        "| · actor compute by step: candidates / score / reasons | "
        + " / ".join(
            f"{med(nightlies, 'funnel', 'compute_s', k):.1f}"
            for k in ("candidates", "score", "reasons")
        )
        + " s |",
        f"| output | {rows:,} rows, {med(floors, 'payload_gb'):.2f} GB as binary COPY |",
        f"| **write floor**: encode + one-connection COPY into a fresh table | "
        f"**{floor:.1f} s** (medians: encode {med(floors, 'encode_s'):.1f}, COPY "
        f"{med(floors, 'copy_s'):.1f}) |",
        f"| same payload on two connections at once (COPY only) | {two:.1f} s |",
        f"| **nightly / write floor** (target ≤ 1.3, #15) | **{nightly / floor:.2f}×** |",
        f"| nightly / (encode + two-connection COPY) | "
        f"{nightly / (med(floors, 'encode_s') + two):.2f}× |",
        f"| recall@{last['recall_audit']['k']} (run's audit, "
        f"{last['recall_audit']['sample_users']} users, vs exhaustive scoring) | "
        f"{last['recall_audit']['recall_at_k']} |",
        f"| candidate funnel (last run) | {funnel['scored']:,} pairs scored exactly, "
        f"{funnel['kept']:,} kept; removed inside blocks: "
        + ", ".join(f"{k} {v:,}" for k, v in funnel["removed_per_filter"].items() if v)
        + " |",
        f"| compute baseline: exhaustive scoring of every filter-passing pair | "
        f"{single['exhaustive_ms_per_user']:.1f} ms per user ({single['exhaustive_users']} users); "
        f"the pipeline: {single['pipeline_ms_per_user']:.1f} ms per user |",
        f"| single user, warm, compute only: p50 / p95 ({single['warm_n']} users) | "
        f"{single['compute_p50']:.1f} / {single['compute_p95']:.1f} ms |",
        f"| single user, warm, compute + replace in one transaction: p50 / p95 | "
        f"{single['with_write_p50']:.1f} / {single['with_write_p95']:.1f} ms |",
        f"| single user, cold `matchjobs score-user` CLI | {single['cold_cli_s']:.1f} s |",
        f"| peak RSS: driver / actors (last run) | {last['peak_rss_mb']['driver']:.0f} MB / "
        + ", ".join(f"{w:.0f}" for w in last["peak_rss_mb"]["workers"])
        + f" MB ({shards['count']} shards) |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--skip-seed", action="store_true", help="reuse the seeded database")
    parser.add_argument("--db-name", default=DB_NAME, help=f"scratch database (default {DB_NAME})")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--runs", type=int, default=3, help="nightly and floor runs")
    parser.add_argument("--warm-users", type=int, default=100)
    parser.add_argument("--exhaustive-users", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print, don't touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    command = "$ .venv/bin/python scripts/bench_match.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    logging.basicConfig(level=logging.WARNING)
    load_start = os.getloadavg()[0]
    config = config_mod.load_config()
    url = (
        database_url(args.admin_url, args.db_name)
        if args.skip_seed
        else create_database(args.admin_url, args.db_name)
    )
    engine = engine_mod.create_engine(url)
    migrate.upgrade(engine)
    if not args.skip_seed:
        # In a child process, so that the peak RSS of this one is the nightly driver's.
        child = multiprocessing.get_context("spawn").Process(
            target=seed_with_signals, args=(url, args.users)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"seeding failed with exit code {child.exitcode}")
    with engine.connect() as conn:
        pg_version = "PostgreSQL " + str(conn.exec_driver_sql("SHOW server_version").scalar_one())
        conn.exec_driver_sql("ANALYZE")

    nightlies = []
    for i in range(args.runs):
        nightlies.append(benchmarks.run_job(engine, config, "match"))
        print(f"nightly {i + 1}: {nightlies[-1]['duration_s']:.1f} s", nightlies[-1]["phases_s"])

    with engine.connect() as conn:
        frame = scores.read_rows(conn, config.algorithm_version)[list(scores.FRAME_COLUMNS)]
    # Rows read back hold one str object per row; the nightly's frames share one object per
    # distinct reasons text, which the encoder encodes once. Share them here too, so that
    # the floor encodes exactly as the nightly does.
    codes, uniques = pd.factorize(frame["reasons"])
    frame["reasons"] = np.asarray(uniques, dtype=object)[codes]
    floors = []
    for i in range(args.runs):
        floors.append(copy_floor(engine, frame, config))
        print(f"floor {i + 1}:", {k: round(v, 2) for k, v in floors[-1].items()})
    rows = len(frame)
    del frame, codes, uniques

    single = single_user_figures(engine, config, args.warm_users, args.exhaustive_users)
    print("single user:", {k: round(v, 2) for k, v in single.items()})
    section = render(
        nightlies, floors, single, rows, command, pg_version, (load_start, os.getloadavg()[0])
    )
    print(section)
    if not args.no_write:
        benchmarks.replace_section(BENCHMARKS, SECTION, section)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
