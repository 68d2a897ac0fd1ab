"""Benchmark the event path on PostgreSQL with one long-running worker; record BENCHMARKS.md.

Creates a scratch database ``mj_bench_events``, seeds it (``jobs.tools.seed``), runs the
signal jobs and the match job over everyone (in-process, no Ray), then starts one
``matchjobs worker`` process and measures:

- per event kind, the latency from the commit of the event row (inserted by SQL, as the app
  does, after its source change) to the moment the API's query sees the change: the user's
  list recomputed (``computed_at`` newer than the insert) for quiz / profile events, the
  pair gone for a pass or block, the user gone from a lister's list for a deactivation, the
  card present for a revived conversation; p50 and p95 over ``--samples`` events each, sent
  one at a time;
- sustained events per second: ``--sustained`` quiz events for distinct users queued at
  once, the time until the queue is empty;
- a storm: ``--storm`` events for ``--storm-users`` users inserted within a few seconds;
  its drain time and coalescing factor (events per refresh actually run).

Each measurement runs once per mode of ``--modes`` (default ``cold,warm``), one after the
other on the same database, each with its own worker process: ``cold`` (``worker.warm:
false``, each batch's match run loads its region) and ``warm`` (the worker holds the
population and re-reads the touched users). The warm worker's first batch loads the whole
population; it is timed apart (a warm-up event) and the samples start after it. The load
average is read at each mode's start and end and printed beside its figures.

The section ``## Event path`` of BENCHMARKS.md is replaced; the scratch database is dropped.

    .venv/bin/python scripts/bench_events.py --users 10000 --samples 15
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.storage import engine as engine_mod
from jobs.storage import migrate, schema
from jobs.tools import benchmarks, seed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRATCH_DB = "mj_bench_events"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION = "## Event path"
CONFIG_YAML = "ray: {enabled: false}\nworker: {poll_interval_s: 0.05, warm: %s}\n"
MODES = ("cold", "warm")
WAIT_S = 300.0


def _scratch_url(admin_url: str, db_name: str) -> str:
    url = sa.engine.make_url(admin_url).set(database=db_name)
    return url.render_as_string(hide_password=False)


def _wait(what: str, check: Any, deadline_s: float = WAIT_S) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < deadline_s:
        if check():
            return time.perf_counter() - start
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def _insert_event(conn: sa.Connection, kind: str, user: int, other: int | None = None) -> None:
    conn.execute(
        sa.insert(schema.events).values(
            kind=kind,
            user_id=user,
            other_user_id=other,
            status="pending",
            attempts=0,
            created_at=runner.utcnow(),
        )
    )


def _computed_at(engine: sa.Engine, version: str, user: int) -> dt.datetime | None:
    m = schema.match_scores
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.min(m.c.computed_at)).where(
                m.c.algorithm_version == version, m.c.user_id == user
            )
        ).scalar_one()


def _listed(engine: sa.Engine, version: str, user: int, candidate: int) -> bool:
    m = schema.match_scores
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.select(sa.func.count()).where(
                    m.c.algorithm_version == version,
                    m.c.user_id == user,
                    m.c.candidate_id == candidate,
                )
            ).scalar_one()
        )


def _pairs(engine: sa.Engine, version: str, n: int, rng: np.random.Generator) -> list[tuple]:
    m = schema.match_scores
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.user_id, m.c.candidate_id)
            .where(m.c.algorithm_version == version)
            .order_by(m.c.user_id, m.c.score.desc())
        ).all()
    picked = rng.choice(len(rows), size=min(n * 4, len(rows)), replace=False)
    seen: set[int] = set()
    out = []
    for i in picked:
        a, b = int(rows[i][0]), int(rows[i][1])
        if a in seen or b in seen:
            continue
        seen |= {a, b}
        out.append((a, b))
        if len(out) == n:
            break
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(engine: sa.Engine, version: str, samples: int, rng: np.random.Generator) -> dict:
    pairs = _pairs(engine, version, samples * 4, rng)
    latencies: dict[str, list[float]] = {}
    marks: list[tuple[str, int]] = []  # (kind, last run id before its event)
    used = iter(pairs)

    def event(kind: str, prepare: Any, check: Any, user: int, other: int | None) -> None:
        # Each sample meets an idle worker: what is left of the previous one's batch (a
        # follow-up fan-out, a refill) would otherwise count against this kind.
        _wait("the worker to be idle", lambda: _idle(engine))
        marks.append((kind, _last_run_id(engine)))
        with engine.begin() as conn:
            prepare(conn)
        with engine.begin() as conn:
            _insert_event(conn, kind, user, other)
        latencies.setdefault(kind, []).append(_wait(kind, check))

    for _ in range(samples):
        a, _b = next(used)
        before = _computed_at(engine, version, a)
        event(
            "quiz_submitted",
            lambda conn: None,
            lambda a=a, before=before: (_computed_at(engine, version, a) or before) > before,
            a,
            None,
        )
        c, d = next(used)
        event(
            "like_created",
            lambda conn, c=c, d=d: conn.execute(
                sa.insert(schema.likes).values(
                    user_id=c, target_id=d, kind="block", created_at=runner.utcnow()
                )
            ),
            lambda c=c, d=d: not _listed(engine, version, c, d),
            c,
            d,
        )
        e, f = next(used)
        event(
            "user_deactivated",
            lambda conn, f=f: conn.execute(
                sa.update(schema.users).where(schema.users.c.id == f).values(is_active=False)
            ),
            lambda e=e, f=f: not _listed(engine, version, e, f),
            f,
            None,
        )
        g, _h = next(used)
        before = _computed_at(engine, version, g)
        event(
            "profile_updated",
            lambda conn, g=g: conn.execute(
                sa.update(schema.users)
                .where(schema.users.c.id == g)
                .values(max_distance_km=schema.users.c.max_distance_km * 0.9)
            ),
            lambda g=g, before=before: (_computed_at(engine, version, g) or before) > before,
            g,
            None,
        )
    _wait("the worker to be idle", lambda: _idle(engine))
    marks.append(("", _last_run_id(engine)))
    return {
        kind: {
            "n": len(v),
            "p50_s": round(_pct(v, 50), 3),
            "p95_s": round(_pct(v, 95), 3),
            "match_runs": match_phases(
                engine, [(a, b) for (k, a), (_, b) in itertools.pairwise(marks) if k == kind]
            ),
        }
        for kind, v in latencies.items()
    }


def _last_run_id(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(schema.job_runs.c.id))).scalar() or 0)


def match_phases(engine: sa.Engine, spans: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    """Median seconds per phase of the event match runs with ids in the ``(after, upto]``
    spans, by fan-out (``own``, ``reverse``, ``none``, ``inline``)."""
    runs = schema.job_runs
    in_spans = sa.or_(*(sa.and_(runs.c.id > a, runs.c.id <= b) for a, b in spans))
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(runs.c.metadata, runs.c.started_at, runs.c.finished_at).where(
                in_spans, runs.c.job_name == "match", runs.c.trigger == "event"
            )
        ).all()
    by_fanout: dict[str, list[dict[str, float]]] = {}
    for meta, started, finished in found:
        figures = json.loads(meta)
        phases = {**figures.get("phases_s", {}), "run": (finished - started).total_seconds()}
        by_fanout.setdefault(figures["reverse"]["fanout"], []).append(phases)
    return {
        fanout: {
            "n": len(rows),
            **{
                phase: round(statistics.median(r.get(phase, 0.0) for r in rows), 3)
                for phase in sorted({p for r in rows for p in r})
            },
        }
        for fanout, rows in by_fanout.items()
    }


def _pending(engine: sa.Engine) -> int:
    e = schema.events
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(e.c.status.in_(("pending", "processing")))
            ).scalar_one()
        )


def _idle(engine: sa.Engine) -> bool:
    """No event waits and no run is in progress (a batch's events may be done before its
    refill is)."""
    with engine.connect() as conn:
        running = conn.execute(
            sa.select(sa.func.count()).where(schema.job_runs.c.status == "running")
        ).scalar_one()
    return _pending(engine) == 0 and int(running) == 0


def sustained(engine: sa.Engine, users: list[int]) -> dict:
    with engine.begin() as conn:
        for u in users:
            _insert_event(conn, "quiz_submitted", u)
    took = _wait("the sustained queue to drain", lambda: _pending(engine) == 0)
    return {
        "events": len(users),
        "drain_s": round(took, 2),
        "events_per_s": round(len(users) / took, 1),
    }


def storm(engine: sa.Engine, users: list[int], n_events: int, spread_s: float) -> dict:
    e = schema.events
    with engine.connect() as conn:
        start_id = conn.execute(sa.select(sa.func.coalesce(sa.func.max(e.c.id), 0))).scalar_one()
    rng = np.random.default_rng(1)
    chunks = 20
    per = n_events // chunks
    start = time.perf_counter()
    for i in range(chunks):
        with engine.begin() as conn:
            conn.execute(
                sa.insert(e),
                [
                    {
                        "kind": "quiz_submitted",
                        "user_id": int(u),
                        "status": "pending",
                        "attempts": 0,
                        "created_at": runner.utcnow(),
                    }
                    for u in rng.choice(users, size=per)
                ],
            )
        time.sleep(max(0.0, (i + 1) * spread_s / chunks - (time.perf_counter() - start)))
    inserted_s = time.perf_counter() - start
    _wait("the storm to drain", lambda: _pending(engine) == 0)
    drained_s = time.perf_counter() - start
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.select(e.c.status, sa.func.count()).where(e.c.id > start_id).group_by(e.c.status)
            ).all()
        )
    done = int(counts.get("done", 0))
    return {
        "events": per * chunks,
        "users": len(users),
        "inserted_over_s": round(inserted_s, 2),
        "drain_s_from_first_insert": round(drained_s, 2),
        "done": done,
        "coalesced": int(counts.get("coalesced", 0)),
        "coalescing_factor": round(per * chunks / max(done, 1), 1),
    }


def _worker(url: str, config_file: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", "--db", url, "--config", str(config_file), "worker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def warm_up(engine: sa.Engine, version: str, user: int) -> float:
    """One quiz event, timed: the first batch of a worker (the warm one loads everything)."""
    before = _computed_at(engine, version, user)
    with engine.begin() as conn:
        _insert_event(conn, "quiz_submitted", user)
    return _wait(
        "the first batch", lambda: (_computed_at(engine, version, user) or before) > before
    )


def run_mode(
    mode: str, engine: sa.Engine, url: str, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    """Start a worker of ``mode``, measure, stop it; the figures and the load average."""
    config_file = Path(tempfile.mkdtemp()) / f"bench-events-{mode}.yaml"
    config_file.write_text(CONFIG_YAML % ("true" if mode == "warm" else "false"))
    version = config_mod.load_config([config_file]).algorithm_version
    out: dict[str, Any] = {"load_start": os.getloadavg(), "throughput": {}}
    procs = [_worker(url, config_file)]
    try:
        time.sleep(2.0)
        with engine.connect() as conn:
            active = [
                int(u)
                for u in conn.execute(
                    sa.select(schema.users.c.id).where(schema.users.c.is_active)
                ).scalars()
            ]
        listed_user = _pairs(engine, version, 1, rng)[0][0]
        out["first_batch_s"] = round(warm_up(engine, version, listed_user), 3)
        out["latency"] = measure(engine, version, args.samples, rng)
        for n_workers in args.workers if args.sustained or args.storm else ():
            while len(procs) < n_workers:
                procs.append(_worker(url, config_file))
                # a warm worker loads everyone at start, while the queue is idle
                time.sleep(2.0 + args.users / 10_000)
            figures: dict[str, Any] = {}
            picked = rng.choice(active, size=min(args.sustained + args.storm_users, len(active)))
            if args.sustained:
                figures["sustained"] = sustained(engine, [int(u) for u in picked[: args.sustained]])
            if args.storm:
                users = [int(u) for u in picked[args.sustained :]]
                figures["storm"] = storm(engine, users, args.storm, args.storm_s)
            out["throughput"][n_workers] = figures
        out["load_end"] = os.getloadavg()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=120)
    return out


def _load(avg: tuple[float, float, float]) -> str:
    return f"{avg[0]:.2f} / {avg[1]:.2f} / {avg[2]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--sustained", type=int, default=200)
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--storm-users", type=int, default=1_000)
    parser.add_argument("--storm-s", type=float, default=10.0)
    parser.add_argument("--modes", default=",".join(MODES), help="cold,warm (in that order)")
    parser.add_argument(
        "--workers",
        default="1",
        help="worker counts for the sustained and storm runs, e.g. 1,2 (default 1); the "
        "latency samples always run against one worker",
    )
    parser.add_argument("--admin-url", default=os.environ.get("MATCHJOBS_BENCH_PG", ADMIN_URL))
    parser.add_argument("--db-name", default=SCRATCH_DB, help=f"scratch database ({SCRATCH_DB})")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--section", default=SECTION, help="BENCHMARKS.md heading to replace")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes must list some of {MODES}; got {args.modes!r}")
    try:
        args.workers = sorted({int(n) for n in args.workers.split(",") if n})
    except ValueError:
        parser.error(f"--workers must be worker counts like 1,2; got {args.workers!r}")
    if not args.workers or args.workers[0] < 1:
        parser.error(f"--workers must be worker counts ≥ 1; got {args.workers}")
    admin = engine_mod.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{args.db_name}"')
    url = _scratch_url(args.admin_url, args.db_name)
    engine = engine_mod.create_engine(url)
    config_file = Path(tempfile.mkdtemp()) / "bench-events.yaml"
    config_file.write_text(CONFIG_YAML % "false")
    config = config_mod.load_config([config_file])
    results: dict[str, dict[str, Any]] = {}
    try:
        migrate.upgrade(engine)
        started = time.perf_counter()
        seed.seed(engine, n_users=args.users, seed=3, now=runner.utcnow(), replace=True)
        for job in ("quiz", "interests", "ratings", "likes", "match"):
            runner.execute(
                job,
                runner.job_function(job),
                engine=engine,
                database_url=url,
                config=config,
                scope=Scope.all(),
                trigger="nightly",
            )
        setup_s = time.perf_counter() - started
        rng = np.random.default_rng(7)
        for mode in modes:
            results[mode] = run_mode(mode, engine, url, args, rng)
            print(mode, results[mode], flush=True)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        admin.dispose()
    text = report(args, argv, modes, results, setup_s)
    print(text)
    if not args.no_write:
        benchmarks.replace_section(BENCHMARKS, args.section, text)
    return 0


FRESH = {
    "quiz_submitted": "the user's list is rewritten",
    "like_created": "the blocked pair is gone (block)",
    "user_deactivated": "a lister's list no longer holds the user",
    "profile_updated": "the user's list is rewritten",
}


def report(
    args: argparse.Namespace,
    argv: list[str] | None,
    modes: list[str],
    results: dict[str, dict[str, Any]],
    setup_s: float,
) -> str:
    given = sys.argv[1:] if argv is None else argv
    command = "python scripts/bench_events.py " + shlex.join(given)
    lines = [
        args.section,
        "",
        f"`{command.strip()}` — {args.users:,} seeded users on PostgreSQL, one long-running "
        f"`matchjobs worker` per mode ({', '.join(modes)}, one after the other on the same "
        f"database; cold: each batch's match run loads its region, warm: the worker holds the "
        f"population and re-reads the users each batch touches), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with "
        f"other work; setup (seed, signal jobs, likes, match) {setup_s:.0f} s; "
        f"{dt.date.today().isoformat()}. Each sample's event is inserted once the worker is "
        "idle (no event pending, no run in progress: the previous batch's refill or fan-out "
        "done).",
        "",
        "| event kind | fresh when | "
        + " | ".join(f"{m} n | {m} p50 s | {m} p95 s" for m in modes)
        + " |",
        "|---|---|" + "---|---|---|" * len(modes),
    ]
    for kind, fresh in FRESH.items():
        cells = []
        for m in modes:
            fig = results[m]["latency"].get(kind, {"n": 0, "p50_s": "–", "p95_s": "–"})
            cells.append(f"{fig['n']} | {fig['p50_s']} | {fig['p95_s']}")
        lines.append(f"| `{kind}` | {fresh} | " + " | ".join(cells) + " |")
    lines += ["", "| mode | load average at start (1 / 5 / 15 min) | at end | first batch s |"]
    lines += ["|---|---|---|---|"]
    for m in modes:
        r = results[m]
        lines.append(
            f"| {m} | {_load(r['load_start'])} | {_load(r['load_end'])} | {r['first_batch_s']} |"
        )
    for m in modes:
        per_kind = {k: f["match_runs"] for k, f in results[m]["latency"].items()}
        names = sorted(
            {p for runs in per_kind.values() for f in runs.values() for p in f} - {"n", "run"}
        )
        lines += [
            "",
            f"Match runs of those samples ({m}), median seconds per phase, by kind and run: "
            "`own` scores the changed users' own lists, `reverse` the follow-up over their "
            "fan-out, `none` a refill of lists that lost a row.",
            "",
            "| event kind | run | n | " + " | ".join(names) + " | whole run |",
            "|---|---|---|" + "---|" * (len(names) + 1),
        ]
        for kind, runs in per_kind.items():
            for fanout, f in sorted(runs.items()):
                cells = " | ".join(str(f.get(p, "–")) for p in names)
                lines.append(f"| `{kind}` | `{fanout}` | {f['n']} | {cells} | {f['run']} |")
    for m in modes:
        for n_workers, r in results[m]["throughput"].items():
            who = f"{m}, {n_workers} worker{'s' if n_workers > 1 else ''}"
            if "sustained" in r:
                rate = r["sustained"]
                lines += [
                    "",
                    f"Sustained ({who}): {rate['events']} quiz events for distinct users queued "
                    f"at once, drained in {rate['drain_s']} s: **{rate['events_per_s']} "
                    "events/s**.",
                ]
            if "storm" not in r:
                continue
            burst = r["storm"]
            lines += [
                "",
                f"Storm ({who}): {burst['events']:,} events for {burst['users']:,} users inserted "
                f"over {burst['inserted_over_s']} s, drained "
                f"{burst['drain_s_from_first_insert']} s after the first insert; "
                f"{burst['done']} refreshes run, {burst['coalesced']:,} coalesced: coalescing "
                f"factor **{burst['coalescing_factor']}** events per refresh.",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
