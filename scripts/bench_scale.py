"""The whole system at scale on PostgreSQL: upgrade, seed, every signal job, the nightly match.

    .venv/bin/python scripts/bench_scale.py --users 100000 [--top-k 100] [--no-write]

In a scratch database (``mj_bench_scale_<hex>``, dropped at the end unless ``--keep-db``),
each phase runs as its own process — ``db upgrade``, ``seed`` (chunked, seed 1), the signal
jobs of ``pipeline.SIGNAL_JOBS`` one by one, then the nightly ``match`` job on local Ray
(the config's actors, CPUs and object store; ``scoring.top_k`` = ``--top-k``) — so that a
phase that fails (out of memory, out of disk, an error) still leaves the earlier phases'
figures, and the report says which phase failed and how. Per phase: wall seconds, the
steps the phase reports (seed tables, the job's ``phases_s``), peak memory (the phase
process's RSS, and the PSS summed over it and everything it started, Ray's workers
included, sampled from /proc), the machine's lowest ``MemAvailable``, the database size
before and after, the free disk, the rows written, and the load average. Replaces the
section ``## Scale`` of BENCHMARKS.md (or of ``--out``); ``--no-write`` only prints it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import pipeline
from jobs.storage import engine as engine_mod
from jobs.storage import migrate, sizes, source, swap
from jobs.tools import benchmarks, seed

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION = "## Scale"
INTRO = (
    "The whole system on N seeded users in a scratch PostgreSQL database, each phase its own "
    "process: schema upgrade, the chunked seed (one transaction), the signal jobs, then the "
    "nightly match job on local Ray. Memory: `RSS` is the phase process's own peak, `tree "
    "PSS` the peak of the proportional set sizes summed over it and every process it started "
    "(Ray's raylet and workers; shared pages counted once), sampled from /proc; PostgreSQL's "
    "own processes are not in it, but `min avail` (the machine's lowest MemAvailable during "
    "the phase) is. Disk: `pg_database_size` after each phase and the free disk under the "
    "data directory. One subsection per population size and top_k.\n"
)
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED = 1
PHASES: tuple[str, ...] = ("upgrade", "seed", *pipeline.SIGNAL_JOBS, "match")
T = TypeVar("T")
STDERR_TAIL = 20  # lines of a failed phase's stderr kept in the report


# ------------------------------------------------------------------------------ one phase


def config_for(top_k: int, workdir: Path) -> config_mod.Config:
    override = workdir / "top_k.yaml"
    override.write_text(f"scoring:\n  top_k: {top_k}\n")
    return config_mod.load_config([override])


def run_phase(phase: str, url: str, n_users: int, top_k: int, workdir: Path) -> dict[str, Any]:
    """Run ``phase`` in this process; its figures (JSON-ready)."""
    engine = engine_mod.create_engine(url)
    try:
        if phase == "upgrade":
            migrate.upgrade(engine)
            return {"rows": 0, "steps_s": {}}
        if phase == "seed":
            result = seed.seed(engine, n_users=n_users, seed=SEED)
            return {
                "rows": sum(result.rows.values()),
                "rows_per_table": result.rows,
                "chunks": result.chunks,
                "steps_s": {
                    "generate": result.generate_seconds,
                    **{f"write {k}": v for k, v in result.table_write_seconds.items() if v >= 0.05},
                },
            }
        config = config_for(top_k, workdir)
        run = benchmarks.run_job(engine, config, phase)
        figures: dict[str, Any] = {
            "rows": int(run.get("rows_written", 0)),
            "steps_s": run.get("phases_s", {}),
            "job_duration_s": run["duration_s"],
        }
        if phase == "match":
            figures["peak_rss_mb"] = run.get("peak_rss_mb")
            figures["users"] = run.get("users")
            with engine.connect() as conn:
                figures["partition_bytes"] = sizes.relation_bytes(
                    conn, swap.partition_name(config.algorithm_version)
                )
                figures["reason_patterns_bytes"] = sizes.relation_bytes(conn, "reason_patterns")
        return figures
    finally:
        engine.dispose()


def phase_main(args: argparse.Namespace) -> int:
    """``--phase``: run one phase, write its figures to ``--result``."""
    figures = run_phase(args.phase, args.url, args.users, args.top_k, Path(args.workdir))
    figures["own_peak_rss_mb"] = benchmarks.peak_rss_mb()
    Path(args.result).write_text(json.dumps(figures, default=str))
    return 0


# ------------------------------------------------------------------------------ the driver


def query(url: str, read: Callable[[sa.Connection], T]) -> T:
    """``read`` on a connection of its own to ``url`` (the driver holds none between phases,
    so that it keeps no backend of the scratch database busy while a phase runs)."""
    engine = engine_mod.create_engine(url)
    try:
        with engine.connect() as conn:
            return read(conn)
    finally:
        engine.dispose()


def disk(conn: sa.Connection) -> dict[str, Any]:
    """The scratch database's size and the free disk under the server's data directory."""
    free, where = swap.free_disk_bytes(conn, None)
    return {"db_bytes": sizes.database_bytes(conn), "free_bytes": free, "where": where}


def active_users(conn: sa.Connection) -> int:
    return source.count_users(conn, active_only=True)


def failure_reason(returncode: int, stderr: str, memory: benchmarks.TreeMemory, free: Any) -> str:
    """What most likely ended a failed phase, in a few words, then its last error line."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(no output)"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if name == "SIGKILL" and memory.min_available_mb is not None:
            return (
                f"killed by {name} (out of memory?: the machine's MemAvailable fell to "
                f"{memory.min_available_mb:,.0f} MB; the phase's tree peaked at "
                f"{memory.tree_pss_mb:,.0f} MB PSS)"
            )
        return f"killed by {name}"
    if "SIGTERM received" in stderr:
        # Ray's handler catches the signal and the process exits with a code of its own; the
        # last line is then some Ray worker's, not the cause.
        return f"exit {returncode} after a SIGTERM from outside the run (stopped, not crashed)"
    if free is not None and free < 2**30:
        return f"exit {returncode}, free disk {free / 2**30:.2f} GiB: {last}"
    if "MemoryError" in stderr or "out of memory" in stderr.lower():
        return f"exit {returncode}, out of memory: {last}"
    return f"exit {returncode}: {last}"


def drive(args: argparse.Namespace, url: str, workdir: Path) -> list[dict[str, Any]]:
    """Run the phases in order, each as a new process; stop at the first that fails."""
    records: list[dict[str, Any]] = []
    before = query(url, disk)
    deadline = None if args.budget_s is None else time.monotonic() + args.budget_s
    seeded_active = 0
    for phase in PHASES:
        result_path = workdir / f"{phase}.json"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--phase", phase, "--url", url, "--users", str(args.users),
            "--top-k", str(args.top_k), "--workdir", str(workdir), "--result", str(result_path),
        ]  # fmt: skip
        stderr_path = workdir / f"{phase}.stderr"
        started = time.perf_counter()
        timed_out = False
        staged = None
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "CI": "1"}
            )
            with benchmarks.TreeMemory(proc.pid, interval_s=args.sample_s) as memory:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 1.0)
                try:
                    returncode = proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    staged = query(url, swap.staged_rows) if phase == "match" else None
                    benchmarks.stop_tree(proc.pid)
                    returncode = proc.wait()
        wall = time.perf_counter() - started
        after = query(url, disk)
        record: dict[str, Any] = {
            "phase": phase,
            "wall_s": wall,
            "returncode": returncode,
            "timed_out": timed_out,
            "root_rss_mb": memory.root_rss_mb,
            "tree_pss_mb": memory.tree_pss_mb,
            "processes": memory.processes,
            "min_available_mb": memory.min_available_mb,
            "db_bytes_before": before["db_bytes"],
            "db_bytes_after": after["db_bytes"],
            "free_bytes_after": after["free_bytes"],
            "load_after": os.getloadavg()[0],
        }
        if timed_out:
            returncode = returncode or -1
            record["returncode"] = returncode
            record["error"] = (
                f"stopped after {wall:,.0f} s: the run's --budget-s {args.budget_s:g} s ran out"
            )
            if staged is not None:
                expected = seeded_active * args.top_k
                record["error"] += (
                    f"; by then {staged:,} rows were staged, of at most {expected:,} "
                    f"({seeded_active:,} active users × top_k {args.top_k}: "
                    f"{100 * staged / max(expected, 1):.1f} %)"
                )
            record["stderr_tail"] = stderr_path.read_text().strip().splitlines()[-STDERR_TAIL:]
        elif returncode == 0:
            record.update(json.loads(result_path.read_text()))
            if phase == "seed":
                seeded_active = query(url, active_users)
        else:
            stderr_text = stderr_path.read_text()
            record["error"] = failure_reason(returncode, stderr_text, memory, after["free_bytes"])
            record["stderr_tail"] = stderr_text.strip().splitlines()[-STDERR_TAIL:]
        records.append(record)
        print(
            f"{phase}: {wall:.1f} s, tree {memory.tree_pss_mb:,.0f} MB PSS"
            + (f" — FAILED: {record['error']}" if returncode else ""),
            file=sys.stderr,
        )
        if returncode != 0:
            break
        before = after
    return records


def _mark(record: dict[str, Any]) -> str:
    if record["timed_out"]:
        return " (STOPPED)"
    return " (FAILED)" if record["returncode"] else ""


def _gb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def render(
    records: list[dict[str, Any]],
    args: argparse.Namespace,
    command: str,
    pg_version: str,
    load: tuple[float, float],
    started_at: dt.datetime,
) -> str:
    config = config_mod.load_config()
    ray_cfg = config.ray
    failed = next((r for r in records if r["returncode"] != 0), None)
    missing = [p for p in PHASES if p not in {r["phase"] for r in records}]
    lines = [
        f"### {args.users:,} users, top_k {args.top_k}",
        "",
        f"Seed {SEED}, realistic cities, {seed.CHUNK_USERS:,} users a seed chunk; local Ray "
        f"with {ray_cfg.num_actors} actors × {ray_cfg.num_cpus_per_actor:g} CPU and a "
        f"{ray_cfg.object_store_mb:,} MB object store; memory sampled every {args.sample_s:g} s"
        + (f"; a budget of {args.budget_s:g} s for the whole run" if args.budget_s else "")
        + ".",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: {os.cpu_count()} cores, {_mem_total_gib():.0f} GiB, {platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {pg_version}",
        f"- date: {started_at.strftime('%Y-%m-%d %H:%M UTC')}; load average {load[0]:.2f} at "
        f"start, {load[1]:.2f} at the end (other work shares these cores)",
        f"- total wall: {sum(r['wall_s'] for r in records):,.1f} s over {len(records)} phases"
        + (
            f"; **phase `{failed['phase']}` failed: {failed['error']}**; not run: "
            + (", ".join(missing) or "none")
            if failed
            else "; every phase succeeded"
        ),
        "",
        "| phase | wall s | rows written | rows/s | RSS MB | tree PSS MB | procs | min avail MB "
        "| db GB after | db growth GB | free disk GB | load after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        rows = r.get("rows")
        rate = f"{rows / r['wall_s']:,.0f}" if rows else "-"
        available = r["min_available_mb"]
        lines.append(
            f"| {r['phase']}{_mark(r)} | {r['wall_s']:.1f} "
            f"| {'-' if rows is None else f'{rows:,}'} | {rate} | {r['root_rss_mb']:,.0f} "
            f"| {r['tree_pss_mb']:,.0f} | {r['processes']} "
            f"| {'-' if available is None else f'{available:,.0f}'} "
            f"| {_gb(r['db_bytes_after'])} | {_gb(r['db_bytes_after'] - r['db_bytes_before'])} "
            f"| {_gb(r['free_bytes_after'])} | {r['load_after']:.2f} |"
        )
    lines += ["", "Steps inside each phase (seconds; from the seed's result and each job's "
              "`job_runs` metadata `phases_s`):", ""]  # fmt: skip
    for r in records:
        steps = r.get("steps_s") or {}
        if steps:
            lines.append(
                f"- {r['phase']}: " + ", ".join(f"{k} {float(v):.1f}" for k, v in steps.items())
            )
    match = next((r for r in records if r["phase"] == "match" and r["returncode"] == 0), None)
    seeded = next((r for r in records if r["phase"] == "seed" and r["returncode"] == 0), None)
    if seeded:
        lines += [
            "",
            f"Seed: {seeded['chunks']} chunks; rows per table: "
            + ", ".join(f"{k} {v:,}" for k, v in seeded["rows_per_table"].items()),
        ]
    if match:
        peak = match.get("peak_rss_mb") or {}
        workers = ", ".join(f"{w:,.0f}" for w in peak.get("workers", []))
        lines += [
            "",
            f"Match: {match.get('users') or 0:,} users scored, {match['rows']:,} rows; the "
            f"version's partition {_gb(match.get('partition_bytes'))} GB"
            + (
                f" ({match['partition_bytes'] / match['rows']:.0f} B a row)"
                if match.get("partition_bytes") and match["rows"]
                else ""
            )
            + f", `reason_patterns` {_gb(match.get('reason_patterns_bytes'))} GB; the job's "
            f"own peak RSS: driver {peak.get('driver', 0):,.0f} MB, actors {workers or '-'} MB.",
        ]
    if failed:
        lines += ["", f"Last lines of `{failed['phase']}`'s stderr:", "", "```"]
        lines += failed["stderr_tail"] + ["```"]
    return "\n".join(lines) + "\n"


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        return int(meminfo.readline().split()[1]) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--sample-s", type=float, default=0.5, help="memory sampling interval")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="wall seconds for the whole run: the phase running when they are spent is "
        "stopped (with its process tree) and reported as such (default: no limit)",
    )
    parser.add_argument("--out", type=Path, default=BENCHMARKS, help="the file to write into")
    parser.add_argument("--no-write", action="store_true", help="print, don't touch --out")
    # one phase, in its own process (the driver runs these)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return phase_main(args)

    given = argv if argv is not None else sys.argv[1:]
    command = "$ .venv/bin/python scripts/bench_scale.py " + shlex.join(given)
    started_at = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()[0]
    admin = engine_mod.create_engine(args.admin_url)
    with admin.connect() as conn:
        pg_version = "PostgreSQL " + str(conn.exec_driver_sql("SHOW server_version").scalar_one())
    url = engine_mod.create_scratch_database(admin, "mj_bench_scale")
    print(f"scratch database {sa.engine.make_url(url).database}", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
            records = drive(args, url, Path(tmp))
    finally:
        if not args.keep_db:
            engine_mod.drop_database(admin, url)
        admin.dispose()
    body = render(records, args, command, pg_version, (load_start, os.getloadavg()[0]), started_at)
    print(f"{SECTION}\n\n{INTRO}\n{body}")
    if not args.no_write:
        heading = body.splitlines()[0]
        benchmarks.replace_subsection(args.out, SECTION, INTRO, heading, body)
    return 0 if all(r["returncode"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
