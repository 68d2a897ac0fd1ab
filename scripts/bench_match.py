"""Benchmark the match job on a seeded population on PostgreSQL.

    .venv/bin/python scripts/bench_match.py --users 100000 [--skip-seed]

Creates (or reuses with --skip-seed) the scratch database ``mj_bench_match``, seeds it with
``jobs.seed`` and runs the signal jobs, then measures in one run:

- the nightly through Ray end to end (time per phase from the run's metadata, peak RSS of
  the driver and the actors, the recall audit);
- the write floor: a raw binary COPY of the same output rows into a fresh table;
- the compute baseline: exhaustive exact scoring of a user sample;
- the single-user warm path (population and indexes already loaded): p50/p95 per user of
  the compute alone and of compute + replace in one transaction; and one cold
  ``matchjobs score-user`` CLI call;
- a summary: nightly / write-floor ratio, recall@K of the run's audit, peak RSS.

Run it with nothing else heavy on the machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import match, runner, seed
from jobs.context import Scope
from jobs.storage import engine as engine_mod
from jobs.storage import ledger, scores

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "mj_bench_match"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"


def create_database() -> None:
    admin = engine_mod.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{DB_NAME}"')
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--skip-seed", action="store_true")
    parser.add_argument("--warm-users", type=int, default=100)
    parser.add_argument("--exhaustive-users", type=int, default=200)
    args = parser.parse_args()
    figures: dict[str, object] = {
        "users_seeded": args.users,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    config = config_mod.load_config()
    clock = lambda: seed.DEFAULT_NOW  # noqa: E731
    if not args.skip_seed:
        create_database()
    engine = engine_mod.create_engine(URL)
    if not args.skip_seed:
        started = time.perf_counter()
        seed.seed(engine, n_users=args.users, seed=1)
        for job in ("quiz", "interests", "ratings"):
            runner.execute(
                job,
                runner.job_function(job),
                engine=engine,
                database_url=URL,
                config=config,
                scope=Scope.all(),
                trigger="nightly",
                clock=clock,
            )
        figures["seed_and_signals_s"] = round(time.perf_counter() - started, 1)

    # 1. The nightly through Ray, end to end.
    started = time.perf_counter()
    runner.execute(
        "match",
        match.run,
        engine=engine,
        database_url=URL,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=clock,
    )
    figures["nightly_s"] = round(time.perf_counter() - started, 1)
    meta = json.loads(ledger.recent_runs(engine, limit=1, job_name="match")["metadata"].iloc[0])
    figures["nightly_metadata"] = meta
    print(json.dumps({"nightly_s": figures["nightly_s"], **meta}, indent=1), flush=True)

    # 2. Write floor: raw binary COPY of the same rows into a fresh table (no index, no key),
    # then with the table's primary key and indexes.
    with engine.connect() as conn:
        rows = scores.read_rows(conn, config.algorithm_version)
    figures["rows"] = len(rows)
    frame = rows[list(scores.FRAME_COLUMNS)]
    for label, ddl in (
        ("copy_fresh_no_index", "CREATE TABLE bench_copy (LIKE match_scores)"),
        (
            "copy_fresh_with_key_and_indexes",
            "CREATE TABLE bench_copy (LIKE match_scores INCLUDING ALL)",
        ),
    ):
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS bench_copy")
            conn.exec_driver_sql(ddl)
        started = time.perf_counter()
        with engine.begin() as conn:
            payload = scores.encode_copy_binary(
                frame, config.algorithm_version, config.content_hash, seed.DEFAULT_NOW
            )
            encoded = time.perf_counter()
            cursor = conn.connection.driver_connection.cursor()
            columns = ", ".join(scores.COPY_COLUMNS)
            with cursor.copy(f"COPY bench_copy ({columns}) FROM STDIN (FORMAT binary)") as copy:
                copy.write(scores._COPY_HEADER)
                copy.write(payload)
                copy.write(scores._COPY_TRAILER)
        total = time.perf_counter() - started
        # 18M rows: the encoded payload is ~2 GB; never hold two (the first run that did was
        # OOM-killed on this 24 GB machine next to other jobs).
        del payload
        figures[label] = {
            "s": round(total, 1),
            "encode_s": round(encoded - started, 1),
            "rows_per_s": round(len(frame) / total),
        }
        print(label, figures[label], flush=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_copy")
    del rows, frame

    # 3 + 4. In-process state for the compute baseline and the warm single-user path.
    settings = match.settings_from_config(config)

    class _Ctx:
        now = seed.DEFAULT_NOW
        logger = __import__("logging").getLogger("bench")
        figures = __import__("jobs.context", fromlist=["Figures"]).Figures()

    with engine.connect() as conn:
        pop, _ = match.load_population(conn, _Ctx, settings)  # type: ignore[arg-type]
    indexes = match.build_indexes(pop, settings)
    rng = np.random.default_rng(5)
    sample = np.sort(rng.choice(pop.n_users, args.exhaustive_users, replace=False))
    started = time.perf_counter()
    match.exhaustive_top_k(pop, sample, settings)
    exhaustive = time.perf_counter() - started
    started = time.perf_counter()
    match.score_rows(pop, indexes, sample, settings)
    pipeline = time.perf_counter() - started
    figures["compute_baseline"] = {
        "sample_users": int(sample.size),
        "exhaustive_ms_per_user": round(1000 * exhaustive / sample.size, 2),
        "pipeline_ms_per_user": round(1000 * pipeline / sample.size, 2),
        "exhaustive_projected_all_users_s": round(exhaustive / sample.size * pop.n_users),
    }
    print("compute", figures["compute_baseline"], flush=True)

    import faiss

    faiss.omp_set_num_threads(1)
    writer = engine_mod.writer(engine)
    times = []
    compute_times = []
    for row in rng.choice(pop.n_users, args.warm_users, replace=False):
        started = time.perf_counter()
        rows_ = np.array([row], dtype=np.int64)
        output = match.score_rows(pop, indexes, rows_, settings)
        compute_times.append(time.perf_counter() - started)
        with writer.begin() as conn:
            scores.replace_user_sets(
                conn,
                output.user_ids,
                output.frame,
                version=settings.version,
                config_hash=settings.config_hash,
                computed_at=seed.DEFAULT_NOW,
            )
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    compute_ms = np.array(compute_times) * 1000
    figures["warm_single_user_ms"] = {
        "compute_p50": round(float(np.percentile(compute_ms, 50)), 1),
        "compute_p95": round(float(np.percentile(compute_ms, 95)), 1),
        "with_write_p50": round(float(np.percentile(ms, 50)), 1),
        "with_write_p95": round(float(np.percentile(ms, 95)), 1),
        "n": len(times),
    }
    print("warm", figures["warm_single_user_ms"], flush=True)

    user = int(pop.user_ids[sample[0]])
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "jobs", "--db", URL, "score-user", str(user)],
        check=True,
        env={**os.environ, "CI": "1"},
        capture_output=True,
    )
    figures["cold_cli_score_user_s"] = round(time.perf_counter() - started, 1)
    print("cold", figures["cold_cli_score_user_s"], flush=True)
    with engine.connect() as conn:
        figures["rows_after"] = int(
            conn.execute(sa.text("SELECT count(*) FROM match_scores")).scalar_one()
        )
    floor = figures["copy_fresh_no_index"]["s"]  # type: ignore[index]
    figures["summary"] = {
        "nightly_s": figures["nightly_s"],
        "copy_floor_s": floor,
        "nightly_over_copy_floor": round(float(figures["nightly_s"]) / floor, 2),  # type: ignore[arg-type]
        "phases_s": meta.get("phases_s", meta.get("phases")),
        "recall_audit": meta.get("recall_audit"),
        "peak_rss_mb": meta.get("peak_rss_mb"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
