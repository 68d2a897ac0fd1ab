"""Subcommands for people who run the system: suggestions, status, worker, events, demo."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from jobs import cli
from jobs.cli import data as data_cli
from jobs.errors import InputDataError, ScopeError


def _reason_texts(reasons_json: str) -> str:
    return "; ".join(r.get("text", r.get("code", "")) for r in json.loads(reasons_json))


def cmd_suggestions(env: cli.Env) -> int:
    args = env.args
    show_suggestions(env, args.user, args.limit, args.version, as_json=args.json)
    return 0


def show_suggestions(
    env: cli.Env, user: int, limit: int, version: str | None, *, as_json: bool
) -> None:
    from jobs.storage import schema, serving

    version = version or env.config.algorithm_version
    with env.reader().connect() as conn:
        rows = serving.suggestion_rows(conn, version, user, limit)
        if not rows and not serving.user_exists(conn, user):
            raise ScopeError(
                f"user {user} does not exist; `matchjobs status` shows who has suggestions"
            )
    names = schema.SUBSCORE_COLUMNS
    if as_json:
        records = [
            {
                "candidate_id": int(row["candidate_id"]),
                "score": float(row["score"]),
                "subscores": {n: float(row[f"s_{n}"]) for n in names},
                "reasons": json.loads(row["reasons"]),
                "computed_at": row["computed_at"].isoformat(),
            }
            for row in rows
        ]
        cli.emit(
            env.args, "", {"user_id": user, "algorithm_version": version, "suggestions": records}
        )
        return
    if not rows:
        print(
            f"no suggestions for user {user} (version {version}); "
            f"run `matchjobs score-user {user}` or the nightly job"
        )
        return
    computed = min(row["computed_at"] for row in rows)
    print(f"suggestions for user {user} (version {version}, computed {computed:%Y-%m-%d %H:%M}Z)")
    print(
        cli.table(
            [
                [
                    int(row["candidate_id"]),
                    f"{row['score']:.3f}",
                    *(f"{row[f's_{n}']:.2f}" for n in names),
                    _reason_texts(row["reasons"])[:80],
                ]
                for row in rows
            ],
            ["candidate", "score", *names, "reasons"],
        )
    )


def status_data(env: cli.Env) -> dict[str, Any]:
    from jobs.storage import api, events

    now = cli.utcnow()
    with env.reader().connect() as conn:
        history = api.job_history(conn, limit_per_job=10)
        coverage = api.coverage(conn, env.config.algorithm_version, now)
        queue = events.counts_by_status(conn)
        backlog = events.backlog(conn, now)
    jobs: dict[str, Any] = {}
    for name, runs in history.groupby("job_name", sort=True):
        ok = runs[runs["status"].isin(["succeeded", "succeeded_with_warnings"])]
        warned = runs[runs["status"] == "succeeded_with_warnings"]
        failed = runs[runs["status"].isin(["failed", "abandoned"])]
        last_ok = ok.iloc[0] if not ok.empty else None
        jobs[str(name)] = {
            "last_status": runs.iloc[0]["status"],
            "last_success_at": None if last_ok is None else last_ok["started_at"].isoformat(),
            "last_success_scope": None if last_ok is None else last_ok["scope"],
            "recent_durations_s": [
                round(float(d) / 1000, 2) for d in ok["duration_ms"].dropna().tolist()[:5]
            ],
            "recent_failures": len(failed),
            "recent_warnings": len(warned),
            "last_error": None if failed.empty else str(failed.iloc[0]["error"]).split("\n")[0],
            "last_warning": None if warned.empty else str(warned.iloc[0]["error"]).split("\n")[0],
        }
    return {
        "algorithm_version": env.config.algorithm_version,
        "jobs": jobs,
        "coverage": coverage,
        "queue": {
            "pending": queue.get("pending", 0),
            "processing": queue.get("processing", 0),
            "dead": queue.get("dead", 0),
            "done": queue.get("done", 0),
            "coalesced": queue.get("coalesced", 0),
            # a worker that falls behind shows here: depth and the oldest pending event's age
            "depth": backlog["depth"],
            "oldest_pending_age_s": backlog["oldest_pending_age_s"],
        },
    }


def cmd_status(env: cli.Env) -> int:
    data = status_data(env)
    if env.args.json:
        cli.emit(env.args, "", data)
        return 0
    cov = data["coverage"]
    stale = cov["staleness_hours"]
    print(
        f"version {data['algorithm_version']}: {cov['users_with_scores']}/{cov['active_users']} "
        f"active users have suggestions ({cov['coverage']:.1%}); oldest set "
        + ("none" if stale is None else f"{stale:.1f} h old")
    )
    q = data["queue"]
    print(
        f"event queue: {q['pending']} pending, {q['processing']} processing, "
        f"{q['dead']} dead, {q['done']} done, {q['coalesced']} coalesced; oldest pending "
        + ("none" if q["oldest_pending_age_s"] is None else f"{q['oldest_pending_age_s']:g} s old")
    )
    if not data["jobs"]:
        print("no job runs yet")
    for name, job in data["jobs"].items():
        durations = ", ".join(f"{d:g}s" for d in job["recent_durations_s"]) or "-"
        line = (
            f"  {name:<10} last {job['last_status']:<10} last success "
            f"{job['last_success_at'] or 'never'} · recent durations {durations} · "
            f"{job['recent_failures']} recent failures"
        )
        if job["recent_warnings"]:
            line += f", {job['recent_warnings']} with warnings"
        if job["last_error"]:
            line += f" · last error: {job['last_error'][:80]}"
        if job["last_warning"] and job["last_status"] == "succeeded_with_warnings":
            line += f" · last warning: {job['last_warning'][:120]}"
        print(line)
    return 0


def cmd_worker(env: cli.Env) -> int:
    from jobs import worker

    args = env.args
    stop = threading.Event()
    # SIGTERM (a deploy, a test) or Ctrl-C: finish the batch in hand, then stop.
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        stats = worker.run_worker(env.engine, env.url, env.config, stop=stop, once=args.once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    cli.emit(
        args,
        f"worker: {stats.batches} batches, {stats.events_done} events done, "
        f"{stats.events_coalesced} coalesced, {stats.events_failed} failed "
        f"({stats.events_dead} dead), {stats.events_deferred} deferred",
        stats.__dict__,
    )
    return 0


def cmd_event(env: cli.Env) -> int:
    from jobs.storage import events

    args = env.args
    event_id = events.enqueue(
        env.engine, args.kind, args.user, cli.utcnow(), other_user_id=args.other
    )
    cli.emit(args, f"queued event {event_id}: {args.kind} user {args.user}", {"id": event_id})
    return 0


def _matchjobs_command() -> str:
    """How to run ``matchjobs`` from the working directory, as it can be pasted."""
    on_path = shutil.which("matchjobs")
    here = Path(sys.argv[0])
    if here.name == "matchjobs" and on_path and Path(on_path).resolve() == here.resolve():
        return "matchjobs"
    if here.name == "matchjobs" and here.exists():
        try:
            return str(here.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(here.resolve())
    return f"{sys.executable} -m jobs"


def cmd_demo(env: cli.Env) -> int:
    from jobs.context import Scope
    from jobs.storage import api, migrate
    from jobs.storage import engine as engine_mod
    from jobs.tools import seed as seed_mod

    args = env.args
    migrate.upgrade(env.engine)
    seeded = seed_mod.seed(
        env.engine,
        n_users=args.users,
        seed=args.seed,
        now=seed_mod.DEFAULT_NOW,
        replace=True,
        show_progress=env.show_progress,
    )
    print(f"seeded {seeded.n_users} users into {engine_mod.redact(env.url)}")
    run_id, _ = cli.run_job(env, "nightly", Scope.all(), "nightly")
    data = status_data(env)
    cov = data["coverage"]
    print(
        f"nightly run {run_id}: {cov['users_with_scores']}/{cov['active_users']} active users "
        f"have suggestions"
    )
    with env.engine.connect() as conn:
        covered = api.users_with_scores(conn, env.config.algorithm_version)
    if not covered:
        raise InputDataError("the nightly run produced no suggestions at all")
    sample = random.Random(args.seed).choice(sorted(covered))
    with env.engine.connect() as conn:
        from jobs.storage import serving

        first = serving.suggestion_rows(conn, env.config.algorithm_version, sample, 1)
    print()
    show_suggestions(env, sample, 5, None, as_json=False)
    # Lines that paste and run as printed: the real executable, the real ids.
    command = f"{_matchjobs_command()} --db {env.url}"
    print("\nwhere to look next:")
    for line in (
        f"{command} suggestions {sample} --limit 20",
        f"{command} explain {sample} {int(first[0]['candidate_id'])}",
        f"{command} runs",
        f"{command} status",
        f"{command} report --out report/",
    ):
        print("  " + line)
    return 0


def cmd_explain(env: cli.Env) -> int:
    from jobs.tools import explain

    args = env.args
    data = explain.explain_pair(
        env.reader(), env.config, args.user, args.candidate, env.as_of or cli.utcnow()
    )
    if args.json:
        cli.emit(args, "", data)
        return 0
    pair = f"user {args.user} -> candidate {args.candidate} (version {data['algorithm_version']})"
    verdict = data["verdict"]
    if verdict == "not_in_population":
        print(f"{pair}: not scored: " + "; ".join(data["detail"]))
        return 0
    if verdict == "filtered":
        print(f"{pair}: kept apart by hard filters:")
        for f in data["filters"]:
            print(f"  {f['filter']:<9} {f['direction']:<16} {f['text']}")
        return 0
    stored = data["stored"]
    head = {
        "listed": f"listed at rank {stored['rank']} with stored score {stored['score']:.3f}"
        if stored
        else "",
        "below_top_k": "not listed: " + "; ".join(data.get("detail", [])),
        "not_generated": "not listed: candidate generation did not find it",
    }[verdict]
    print(f"{pair}: {head}")
    them = f"{args.candidate} -> {args.user}"
    reverse = (
        f"reverse {them} {data['reverse_score']:.3f}, fused (reciprocal fusion on)"
        if data["reciprocal"]
        else f"reverse {them} {data['reverse_score']:.3f}, not used (reciprocal fusion off)"
    )
    print(
        f"  score now {data['score']:.3f} (forward {args.user} -> {args.candidate} "
        f"{data['forward_score']:.3f}; {reverse})"
    )
    print(f"  {'signal':<15}{'weight':>8}{'subscore':>10}{'contrib':>9}")
    for s in data["signals"]:
        flag = "  (missing: neutral)" if s["missing"] else ""
        print(
            f"  {s['signal']:<15}{s['weight']:>8.3f}{s['subscore']:>10.3f}"
            f"{s['contribution']:>9.3f}{flag}"
        )
    if verdict == "not_generated":
        for line in data["detail"]:
            print(f"  {line}")
    if "note" in data:
        print(f"  note: {data['note']}")
    return 0


def define_explain(p: argparse.ArgumentParser) -> cli.Handler:
    p.description = (
        "Why CANDIDATE is (or is not) in USER's list: the stored rank and score, the score "
        "recomputed now signal by signal, or the hard filter and the exclusion that keep the "
        "pair apart."
    )
    p.add_argument("user", type=int, metavar="USER", help="the viewer")
    p.add_argument("candidate", type=int, metavar="CANDIDATE", help="the candidate")
    cli.add_json(p, "the explanation")
    return cmd_explain


def define_suggestions(p: argparse.ArgumentParser) -> cli.Handler:
    p.add_argument("user", type=int, metavar="USER", help="the user whose list to read")
    p.add_argument(
        "--limit", type=data_cli.positive_int, default=20, metavar="N", help="rows (default 20)"
    )
    p.add_argument(
        "--version", metavar="V", help="algorithm version (default: the config's algorithm_version)"
    )
    cli.add_json(p, "the suggestions")
    return cmd_suggestions


def define_status(p: argparse.ArgumentParser) -> cli.Handler:
    cli.add_json(p, "the status")
    return cmd_status


def define_worker(p: argparse.ArgumentParser) -> cli.Handler:
    p.add_argument(
        "--once", action="store_true", help="stop when the queue is empty (default: run on)"
    )
    cli.add_json(p, "the worker's totals")
    return cmd_worker


def define_event(p: argparse.ArgumentParser) -> cli.Handler:
    from jobs.storage.schema import EVENT_KINDS

    p.add_argument("kind", choices=EVENT_KINDS, help="what happened")
    p.add_argument("user", type=int, metavar="USER", help="the user it happened to")
    p.add_argument(
        "--other",
        type=int,
        metavar="ID",
        help="the other user: rated profile (rating_created), liked/passed/blocked user "
        "(like_created), the conversation's other side (conversation_revived); "
        "required by those kinds only (default: none)",
    )
    cli.add_json(p, "the queued event's id")
    return cmd_event


def define_demo(p: argparse.ArgumentParser) -> cli.Handler:
    p.description = (
        "Create the schema, seed a synthetic population (replacing the source rows), run the "
        "nightly pipeline on local Ray and print one user's suggestions."
    )
    p.add_argument(
        "--users",
        type=data_cli.positive_int,
        default=3000,
        metavar="N",
        help="users to seed (default 3000)",
    )
    p.add_argument("--seed", type=int, default=7, metavar="S", help="random seed (default 7)")
    return cmd_demo
