"""Bytes per stored match_scores row, the API read's latency and the nightly's wall time.

    .venv/bin/python scripts/bench_storage.py prepare --users 20000
    .venv/bin/python scripts/bench_storage.py measure --label after --runs 2
    (cd /old/checkout && .venv/bin/python /new/checkout/scripts/bench_storage.py \\
        measure --label before --runs 2)
    .venv/bin/python scripts/bench_storage.py render

``prepare`` seeds ``mj_bench_storage_base`` (``jobs.tools.seed``, seed 1) and runs the signal
jobs, then clones it (``CREATE DATABASE … TEMPLATE``) into one database per label, so every
label scores the same data; each ``measure`` upgrades its own database with the code it runs
(run it with an older checkout's own ``.venv`` — its Ray workers too then import that
checkout's ``jobs`` — to measure the layout before a change; results still come here).
``measure`` runs the nightly match job ``--runs`` times and after each records: its
``job_runs`` duration and phases, the version's partition by ``pg_total_relation_size`` (heap,
each index, TOAST) and ``reason_patterns`` if it exists, and the API read
(``jobs.storage.serving.suggestions_query``, limit 20) for ``--reads`` random users, one
connection, after a warm-up pass: p50 / p99. Results go to ``.bench/storage.json`` beside this
script's BENCHMARKS.md; ``render`` replaces the section ``## Storage`` of BENCHMARKS.md with
them. Interleave the labels' runs (before, after, before, after) so that both meet the same
load; the load average is recorded with every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobs import config as config_mod
from jobs import pipeline, runner
from jobs.context import Scope
from jobs.storage import engine as engine_mod
from jobs.storage import ledger, migrate, serving
from jobs.tools import benchmarks, seed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BASE_DB = "mj_bench_storage_base"
ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / ".bench" / "storage.json"
SECTION = "## Storage"


def url(args: argparse.Namespace, name: str) -> str:
    admin_url = sa.engine.make_url(args.admin_url)
    return admin_url.set(database=name).render_as_string(hide_password=False)


def admin(args: argparse.Namespace, *statements: str) -> None:
    engine = engine_mod.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def run_job(engine: sa.Engine, config: config_mod.Config, job: str) -> dict[str, Any]:
    # jobs.tools.benchmarks.run_job, repeated rather than shared:
    # an older checkout (its .venv runs this script) has no such helper in jobs/tools.
    run_id, _ = runner.execute(
        job,
        runner.job_function(job),
        engine=engine,
        database_url=engine.url.render_as_string(hide_password=False),
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: seed.DEFAULT_NOW,
    )
    run = ledger.recent_runs(engine, limit=1, job_name=job).iloc[0]
    if int(run["id"]) != run_id or run["status"] != "succeeded":
        raise SystemExit(f"{job} run {run_id} did not succeed: {run.to_dict()}")
    return {"duration_s": float(run["duration_ms"]) / 1000, **json.loads(run["metadata"])}


def prepare(args: argparse.Namespace) -> None:
    base = args.base_db
    admin(args, f'DROP DATABASE IF EXISTS "{base}" WITH (FORCE)', f'CREATE DATABASE "{base}"')
    engine = engine_mod.create_engine(url(args, base))
    config = config_mod.load_config()
    # The base stays at the oldest revision a label may run: each label upgrades its clone.
    migrate.upgrade(engine, args.base_revision)
    seed.seed(engine, n_users=args.users, seed=1)
    # Every signal job, the likes job included: without it the behaviour subscores are
    # neutral and the reasons fewer than a real nightly's.
    for job in pipeline.SIGNAL_JOBS:
        run_job(engine, config, job)
    engine.dispose()
    for label in args.labels:
        name = f"{base}_{label}"
        admin(
            args,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}" TEMPLATE "{base}"',
        )
    print(f"seeded {args.users} users; databases for {', '.join(args.labels)}")


def partition_name(version: str) -> str:
    return "match_scores_v_" + hashlib.sha1(version.encode()).hexdigest()[:12]


def sizes(conn: sa.Connection, version: str) -> dict[str, Any]:
    part = partition_name(version)
    rows = conn.execute(sa.text(f'SELECT count(*) FROM "{part}"')).scalar_one()
    figures: dict[str, Any] = {
        "rows": int(rows),
        "total_bytes": conn.execute(
            sa.text("SELECT pg_total_relation_size(:p)"), {"p": part}
        ).scalar_one(),
        "heap_bytes": conn.execute(
            sa.text("SELECT pg_relation_size(:p)"), {"p": part}
        ).scalar_one(),
        "toast_bytes": conn.execute(
            sa.text(
                "SELECT COALESCE(pg_total_relation_size(reltoastrelid), 0) FROM pg_class "
                "WHERE oid = CAST(:p AS regclass)"
            ),
            {"p": part},
        ).scalar_one(),
        "indexes": {
            str(name): int(size)
            for name, size in conn.execute(
                sa.text(
                    "SELECT pg_get_indexdef(i.indexrelid), pg_relation_size(i.indexrelid) "
                    "FROM pg_index i WHERE i.indrelid = CAST(:p AS regclass) ORDER BY 1"
                ),
                {"p": part},
            ).all()
        },
    }
    patterns = conn.execute(sa.text("SELECT to_regclass('reason_patterns')")).scalar_one()
    if patterns is not None:
        figures["patterns"] = int(
            conn.execute(sa.text("SELECT count(*) FROM reason_patterns")).scalar_one()
        )
        figures["patterns_bytes"] = int(
            conn.execute(sa.text("SELECT pg_total_relation_size('reason_patterns')")).scalar_one()
        )
    return figures


def read_latency(engine: sa.Engine, version: str, n_reads: int) -> dict[str, float]:
    with engine.connect() as conn:
        part = partition_name(version)
        users = list(conn.execute(sa.text(f'SELECT DISTINCT user_id FROM "{part}"')).scalars())
    picked = random.Random(0).sample(users, min(n_reads, len(users)))
    timings: list[float] = []
    with engine.connect() as conn:
        for warm in (True, False):
            for user in picked:
                started = time.perf_counter()
                conn.execute(serving.suggestions_query(version, int(user), 20)).all()
                if not warm:
                    timings.append((time.perf_counter() - started) * 1000)
        plan = "\n".join(
            conn.execute(
                sa.text("EXPLAIN " + str(_compiled(conn, version, int(picked[0]))))
            ).scalars()
        )
        # The server's share: EXPLAIN ANALYZE's execution time (no client, no planning).
        server: list[float] = []
        for user in picked[:200]:
            explained = conn.execute(
                sa.text(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + str(_compiled(conn, version, int(user)))
                )
            ).scalar_one()
            explained = json.loads(explained) if isinstance(explained, str) else explained
            server.append(float(explained[0]["Execution Time"]))
    timings.sort()
    return {
        "reads": len(timings),
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[int(0.99 * (len(timings) - 1))],
        "server_p50_ms": statistics.median(server),
        "plan": plan,
    }


def _compiled(conn: sa.Connection, version: str, user: int) -> Any:
    return serving.suggestions_query(version, user, 20).compile(
        dialect=conn.dialect, compile_kwargs={"literal_binds": True}
    )


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def measure(args: argparse.Namespace) -> None:
    name = f"{args.base_db}_{args.label}"
    engine = engine_mod.create_engine(url(args, name))
    migrate.upgrade(engine)
    config = config_mod.load_config()
    revision = migrate.current_revision(engine)
    commit = subprocess.run(
        ["git", "-C", str(Path(migrate.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    results = json.loads(args.results.read_text()) if args.results.exists() else []
    for _ in range(args.runs):
        load_before = loadavg()
        run = run_job(engine, config, "match")
        with engine.connect() as conn:
            stored = sizes(conn, config.algorithm_version)
        reads = read_latency(engine, config.algorithm_version, args.reads)
        entry = {
            "label": args.label,
            "code": str(Path(migrate.__file__).resolve().parents[2]),
            "commit": commit,
            "revision": revision,
            "users": int(run.get("users", 0) or run.get("funnel", {}).get("users", 0)),
            "nightly_s": run["duration_s"],
            "phases_s": {k: round(v, 2) for k, v in run.get("phases_s", {}).items()},
            "load_before": load_before,
            "load_after": loadavg(),
            **stored,
            **reads,
        }
        results.append(entry)
        args.results.parent.mkdir(exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1))
        print(
            f"{args.label}: nightly {entry['nightly_s']:.1f} s, "
            f"{entry['total_bytes'] / entry['rows']:.0f} B/row, read p50 {entry['p50_ms']:.3f} ms "
            f"(load {load_before})"
        )
    engine.dispose()


def reads(args: argparse.Namespace) -> None:
    """The API read alone, on the label's database as its last ``measure`` left it."""
    engine = engine_mod.create_engine(url(args, f"{args.base_db}_{args.label}"))
    config = config_mod.load_config()
    figures = read_latency(engine, config.algorithm_version, args.reads)
    engine.dispose()
    results = json.loads(args.results.read_text()) if args.results.exists() else []
    results.append({"label": args.label, "kind": "reads", "load": loadavg(), **figures})
    args.results.write_text(json.dumps(results, indent=1))
    print(
        f"{args.label}: API p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, "
        f"server p50 {figures['server_p50_ms']:.3f} ms (load {loadavg()})"
    )


def render(args: argparse.Namespace) -> None:
    everything = json.loads(args.results.read_text())
    results = [r for r in everything if r.get("kind") != "reads"]
    read_runs = [r for r in everything if r.get("kind") == "reads"]
    lines = [
        SECTION,
        "",
        "`match_scores` bytes per stored row (the version's partition: heap + indexes + TOAST,",
        "by `pg_total_relation_size`, plus `reason_patterns` where it exists), the API read and",
        "the nightly match job, on the same seeded data (seed 1), runs interleaved. Commands:",
        "",
        "```sh",
        ".venv/bin/python scripts/bench_storage.py prepare --users N",
        "(cd <checkout before> && .venv/bin/python <this checkout>/scripts/bench_storage.py "
        "measure --label before --runs 1)",
        ".venv/bin/python scripts/bench_storage.py measure --label after --runs 1   # repeated",
        ".venv/bin/python scripts/bench_storage.py render",
        "```",
        "",
        "The machine is shared (2 cores, other engineers' jobs running): the load average",
        "before and after each run is in the table; compare the labels' runs side by side.",
        "",
        "| label | rev | rows | heap B/row | indexes B/row (each) | patterns B/row "
        "| **total B/row** | nightly s | swap s | API p50 / p99 ms | load before → after |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        rows = r["rows"]
        each = " + ".join(f"{size / rows:.0f}" for size in r["indexes"].values())
        index_total = sum(r["indexes"].values()) / rows
        patterns = r.get("patterns_bytes", 0) / rows
        total = (r["total_bytes"] + r.get("patterns_bytes", 0)) / rows
        lines.append(
            f"| {r['label']} | {r['revision']} | {rows:,} | {r['heap_bytes'] / rows:.1f} | "
            f"{index_total:.1f} ({each}) | {patterns:.1f} | **{total:.1f}** | "
            f"{r['nightly_s']:.1f} | {r['phases_s'].get('swap', float('nan')):.1f} | "
            f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f} | {r['load_before']} → {r['load_after']} |"
        )
    last = results[-1]
    lines += [
        "",
        "Indexes of the last run: " + "; ".join(f"`{d}`" for d in last["indexes"]) + ".",
    ]
    if "patterns" in last:
        lines.append(
            f"`reason_patterns` held {last['patterns']:,} distinct reason lists "
            f"({last['patterns_bytes'] / 1e6:.1f} MB)."
        )
    if read_runs:
        lines += [
            "",
            "The API read alone, labels interleaved (`bench_storage.py reads --label L`): "
            "client p50 / p99 over the reads, after a warm-up pass, and the server's p50 "
            "(`EXPLAIN ANALYZE` execution time, 200 users).",
            "",
            "| label | reads | p50 ms | p99 ms | server p50 ms | load |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in read_runs:
            lines.append(
                f"| {r['label']} | {r['reads']:,} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['server_p50_ms']:.3f} | {r['load']} |"
            )
        last = read_runs[-1]
    lines += ["", "API read plan (last run):", "", "```", last["plan"], "```", ""]
    section = "\n".join(lines)
    if args.no_write:
        print(section)
        return
    benchmarks.replace_section(BENCHMARKS, SECTION, section)
    print(f"wrote {SECTION} to {BENCHMARKS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--base-db", default=BASE_DB, help="the seeded base; labels add _LABEL")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the runs' figures")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--labels", nargs="+", default=["before", "after"])
    p.add_argument("--base-revision", default="0013")
    p.set_defaults(func=prepare)
    m = sub.add_parser("measure")
    m.add_argument("--label", required=True)
    m.add_argument("--runs", type=int, default=1)
    m.add_argument("--reads", type=int, default=2000)
    m.set_defaults(func=measure)
    q = sub.add_parser("reads")
    q.add_argument("--label", required=True)
    q.add_argument("--reads", type=int, default=2000)
    q.set_defaults(func=reads)
    r = sub.add_parser("render")
    r.add_argument("--no-write", action="store_true", help="print, don't touch BENCHMARKS.md")
    r.set_defaults(func=render)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
