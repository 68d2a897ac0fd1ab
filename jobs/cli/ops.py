"""Subcommands for people who run the system: suggestions, status, worker, events, demo."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

import numpy as np
import pandas as pd

from jobs import cli, runner, worker
from jobs.context import Scope
from jobs.errors import InputDataError
from jobs.storage import api, events, migrate
from jobs.storage import engine as engine_mod
from jobs.storage.schema import EVENT_KINDS, SUBSCORE_COLUMNS


def _reason_texts(reasons_json: str) -> str:
    return "; ".join(r.get("text", r.get("code", "")) for r in json.loads(reasons_json))


def cmd_suggestions(env: cli.Env) -> int:
    args = env.args
    show_suggestions(env, args.user, args.limit, args.version, as_json=args.json)
    return 0


def show_suggestions(
    env: cli.Env, user: int, limit: int, version: str | None, *, as_json: bool
) -> None:
    version = version or env.config.algorithm_version
    with env.engine.connect() as conn:
        frame = api.suggestions(conn, version, user, limit)
    if as_json:
        records = []
        for row in frame.itertuples(index=False):
            records.append(
                {
                    "candidate_id": int(row.candidate_id),
                    "score": float(row.score),
                    "subscores": {n: float(getattr(row, f"s_{n}")) for n in SUBSCORE_COLUMNS},
                    "reasons": json.loads(row.reasons),
                    "computed_at": row.computed_at.isoformat(),
                }
            )
        cli.emit(
            env.args, "", {"user_id": user, "algorithm_version": version, "suggestions": records}
        )
        return
    if frame.empty:
        print(
            f"no suggestions for user {user} (version {version}); "
            f"run `matchjobs score-user {user}` or the nightly job"
        )
        return
    shown = pd.DataFrame(
        {
            "candidate": frame["candidate_id"],
            "score": frame["score"].round(3),
            **{n: frame[f"s_{n}"].round(2) for n in SUBSCORE_COLUMNS},
            "reasons": frame["reasons"].map(_reason_texts),
        }
    )
    print(
        f"suggestions for user {user} (version {version}, "
        f"computed {frame['computed_at'].min():%Y-%m-%d %H:%M}Z)"
    )
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(shown.to_string(index=False))


def status_data(env: cli.Env) -> dict[str, Any]:
    now = runner.utcnow()
    with env.engine.connect() as conn:
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
    args = env.args
    event_id = events.enqueue(
        env.engine, args.kind, args.user, runner.utcnow(), other_user_id=args.other
    )
    cli.emit(args, f"queued event {event_id}: {args.kind} user {args.user}", {"id": event_id})
    return 0


def cmd_demo(env: cli.Env) -> int:
    from jobs.tools import seed as seed_mod

    args = env.args
    migrate.upgrade(env.engine)
    seeded = seed_mod.seed(
        env.engine, n_users=args.users, seed=args.seed, now=seed_mod.DEFAULT_NOW, replace=True
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
    sample = int(np.random.default_rng(args.seed).choice(covered))
    print()
    show_suggestions(env, sample, 5, None, as_json=False)
    print("\nwhere to look next:")
    for line in (
        f"matchjobs --db {env.url} suggestions {sample} --limit 20",
        f"matchjobs --db {env.url} explain {sample} <candidate id>",
        f"matchjobs --db {env.url} runs",
        f"matchjobs --db {env.url} status",
        f"matchjobs --db {env.url} report --out report/",
    ):
        print("  " + line)
    return 0


def cmd_explain(env: cli.Env) -> int:
    from jobs.tools import explain

    args = env.args
    data = explain.explain_pair(
        env.engine, env.config, args.user, args.candidate, env.as_of or runner.utcnow()
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
    print(
        f"  score now {data['score']:.3f} (forward {data['forward_score']:.3f}, reverse "
        f"{data['reverse_score']:.3f}, reciprocal fusion {'on' if data['reciprocal'] else 'off'})"
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


def register(sub: Any, handlers: dict[str, cli.Handler]) -> None:
    p = sub.add_parser(
        "explain", help="why a pair scores what it does, or which filter keeps it apart"
    )
    p.add_argument("user", type=int)
    p.add_argument("candidate", type=int)
    p.add_argument("--json", action="store_true")
    handlers["explain"] = cmd_explain

    p = sub.add_parser("suggestions", help="a user's suggestions, exactly as the API reads them")
    p.add_argument("user", type=int)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--version", help="algorithm version (default: the config's)")
    p.add_argument("--json", action="store_true")
    handlers["suggestions"] = cmd_suggestions

    p = sub.add_parser("status", help="per-job health, coverage, staleness, event queue")
    p.add_argument("--json", action="store_true")
    handlers["status"] = cmd_status

    p = sub.add_parser("worker", help="drain the event queue (runs until stopped)")
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--json", action="store_true")
    handlers["worker"] = cmd_worker

    p = sub.add_parser("event", help="queue an event as the app would")
    p.add_argument("kind", choices=EVENT_KINDS)
    p.add_argument("user", type=int)
    p.add_argument(
        "--other",
        type=int,
        help="the other user: rated profile (rating_created), liked/passed/blocked user "
        "(like_created), the conversation's other side (conversation_revived); "
        "required by those kinds only",
    )
    p.add_argument("--json", action="store_true")
    handlers["event"] = cmd_event

    p = sub.add_parser(
        "demo",
        help="seed a population, run the nightly pipeline, show a user's suggestions",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--seed", type=int, default=7)
    handlers["demo"] = cmd_demo
