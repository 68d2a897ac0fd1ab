"""Nightly pipeline: every signal job, the match job over all active users, backfill, feed.

Scope: all (a user scope is refused). Writes nothing itself: each step is its own run in
``job_runs`` (trigger ``nightly``; the backfill step ``backfill``) and writes its own tables.
Steps, in order:

1. ``quiz``, ``interests``, ``ratings``, ``likes`` for all users. A failed signal job does
   not stop the others (failures stay isolated, as the design asks); the match job then
   works from the last good signal tables.
2. ``match`` for all active users (Ray when the population is large).
3. Backfill: ``match`` again for users marked stale (an event's reverse fan-out past its
   cap, a failed refill; a mark made while step 2 ran survives it) — first, as its own step
   ``backfill_stale`` — then for users with no set for this version (unless recorded as
   having no candidate at all) or whose signals are newer than their set.
4. ``feed`` for all users.

The nightly run fails, naming the failed steps, if any step failed, and ends
``succeeded_with_warnings`` if a step did. A match output refused for low coverage
(``audit.min_coverage``; ``ctx.force_swap`` publishes it anyway) skips the backfill, which
would score the same inputs.
"""

from __future__ import annotations

import sqlalchemy as sa

from jobs import runner
from jobs.context import JobContext, JobResult, Scope
from jobs.errors import JobError, LowCoverageError, ScopeError
from jobs.storage import api, set_states

SIGNAL_JOBS = ("quiz", "interests", "ratings", "likes")


def run(ctx: JobContext, scope: Scope) -> JobResult:
    if not scope.is_all:
        raise ScopeError(f"the nightly pipeline runs over all users; got scope {scope.label}")
    engine = ctx.session.get_bind()
    if not isinstance(engine, sa.Engine):
        raise TypeError(f"the nightly session must be bound to an Engine; got {engine!r}")
    # kept in the run's figures so that a failed nightly still records every step
    steps: dict[str, dict[str, object]] = ctx.figures.counts.setdefault("steps", {})
    failed: list[str] = []
    refused: list[str] = []

    def step(name: str, job: str, step_scope: Scope, trigger: str) -> None:
        with ctx.figures.phase(name):
            try:
                run_id, result = runner.execute(
                    job,
                    runner.job_function(job),
                    engine=engine,
                    database_url=ctx.database_url,
                    config=ctx.config,
                    scope=step_scope,
                    trigger=trigger,
                    show_progress=ctx.show_progress,
                    force_swap=ctx.force_swap,
                    replace_version=ctx.replace_version,
                    as_of=ctx.as_of,
                )
            except Exception as exc:
                # Isolation, not silence: the child run is recorded as failed in job_runs
                # and this nightly run fails at the end, naming it.
                failed.append(name)
                if isinstance(exc, LowCoverageError):
                    refused.append(name)
                steps[name] = {"status": "failed", "error": runner.error_chain(exc)}
                ctx.logger.error(
                    "nightly step %s failed: %s",
                    name,
                    exc,
                    extra={"action": "nightly.step_failed", "step": name},
                )
                return
            steps[name] = {
                "status": "succeeded_with_warnings" if result.warnings else "succeeded",
                "run_id": run_id,
                "rows_written": result.rows_written,
                "users": result.users,
            }
            for warning in result.warnings:
                ctx.figures.warn(f"step {name}: {warning}", ctx.logger, "nightly.step_warning")
            if result.warnings and not ctx.force_swap:
                refused.append(name)

    for job in SIGNAL_JOBS:
        step(job, job, Scope.all(), "nightly")
    step("match", "match", Scope.all(), "nightly")
    with engine.connect() as conn:
        stale = api.stale_users(conn, ctx.config.algorithm_version)
        marked = set(set_states.marked_ids(conn, ctx.config.algorithm_version, "stale").tolist())
    first = [u for u in stale if u in marked]
    rest = [u for u in stale if u not in marked]
    ctx.figures.counts["backfill_users"] = len(stale)
    ctx.figures.counts["backfill_marked_stale"] = len(first)
    if "match" not in refused:
        if first:
            step("backfill_stale", "match", Scope.users(*first), "backfill")
        if rest:
            step("backfill", "match", Scope.users(*rest), "backfill")
    step("feed", "feed", Scope.all(), "nightly")
    if failed:
        raise JobError(f"nightly steps failed: {', '.join(failed)}; see job_runs for each")
    written = [s["rows_written"] for s in steps.values() if isinstance(s.get("rows_written"), int)]
    users = steps["match"].get("users", 0)
    return JobResult(users=users if isinstance(users, int) else 0, rows_written=sum(written))
