"""The event worker: drains the app's event queue and refreshes what each event touches.

No Ray here: every job runs in-process on the affected users only, so a quiz submission
reaches ``match_scores`` within seconds. One batch of claimed events becomes one plan:

- ``quiz_submitted`` U      → quiz job for U, then match for U
- ``interests_changed`` U   → interests job for U, then match for U
- ``rating_created`` R → P  → ratings job for R and P (R's preferences, P's aggregates),
                              then match for R and P
- ``user_changed`` U        → match for U (filters or profile changed)

The match job's single-user path also refreshes at most ``fanout.max_reverse`` users who
list U (the reverse direction); the rest is left to the nightly run. Duplicate events in a
batch coalesce into one refresh. A failed batch goes back to the queue and, after
``worker.max_attempts`` claims, its events are parked as ``dead`` with the error.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence

import sqlalchemy as sa

from jobs import runner
from jobs.config import Config
from jobs.context import Scope
from jobs.storage import events as event_store

logger = logging.getLogger(__name__)

SIGNAL_JOB_FOR_EVENT = {"quiz_submitted": "quiz", "interests_changed": "interests"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one batch of events asks for."""

    signal_users: dict[str, tuple[int, ...]]  # job name -> users, in run order
    match_users: tuple[int, ...]
    kept_ids: tuple[int, ...]
    coalesced_ids: tuple[int, ...]


def plan_batch(batch: Sequence[event_store.Event]) -> Plan:
    """Coalesce duplicate events and collect the users each job must refresh."""
    seen: set[tuple[str, int, int | None]] = set()
    kept: list[int] = []
    coalesced: list[int] = []
    signal: dict[str, set[int]] = {"quiz": set(), "interests": set(), "ratings": set()}
    match: set[int] = set()
    for event in batch:
        key = (event.kind, event.user_id, event.other_user_id)
        if key in seen:
            coalesced.append(event.id)
            continue
        seen.add(key)
        kept.append(event.id)
        match.add(event.user_id)
        if event.kind in SIGNAL_JOB_FOR_EVENT:
            signal[SIGNAL_JOB_FOR_EVENT[event.kind]].add(event.user_id)
        elif event.kind == "rating_created" and event.other_user_id is not None:
            signal["ratings"].update((event.user_id, event.other_user_id))
            match.add(event.other_user_id)
    return Plan(
        signal_users={job: tuple(sorted(users)) for job, users in signal.items() if users},
        match_users=tuple(sorted(match)),
        kept_ids=tuple(kept),
        coalesced_ids=tuple(coalesced),
    )


@dataclasses.dataclass
class WorkerStats:
    batches: int = 0
    events_done: int = 0
    events_coalesced: int = 0
    events_failed: int = 0


def process_batch(
    engine: sa.Engine,
    database_url: str,
    config: Config,
    stats: WorkerStats | None = None,
) -> int:
    """Claim and process one batch; return how many events were claimed (0 = queue empty)."""
    stats = stats if stats is not None else WorkerStats()
    batch = event_store.claim(
        engine, config.worker.batch_size, runner.utcnow(), config.runner.lease_s
    )
    if not batch:
        return 0
    plan = plan_batch(batch)
    try:
        for job, users in plan.signal_users.items():
            _run(job, users, engine, database_url, config)
        _run("match", plan.match_users, engine, database_url, config)
        _run("feed", plan.match_users, engine, database_url, config)
    except Exception as exc:
        # Recorded on the events (and in job_runs by the runner); the worker keeps draining.
        ids = list(plan.kept_ids + plan.coalesced_ids)
        event_store.fail(
            engine, ids, runner.error_chain(exc), config.worker.max_attempts, runner.utcnow()
        )
        stats.events_failed += len(ids)
        logger.error(
            "batch of %d events failed: %s",
            len(ids),
            exc,
            extra={"action": "worker.fail", "event_ids": ids},
        )
        return len(batch)
    done_at = runner.utcnow()
    event_store.finish(engine, list(plan.kept_ids), "done", done_at)
    event_store.finish(engine, list(plan.coalesced_ids), "coalesced", done_at)
    stats.batches += 1
    stats.events_done += len(plan.kept_ids)
    stats.events_coalesced += len(plan.coalesced_ids)
    logger.info(
        "processed %d events (%d coalesced) for %d users",
        len(batch),
        len(plan.coalesced_ids),
        len(plan.match_users),
        extra={"action": "worker.batch", "users": len(plan.match_users)},
    )
    return len(batch)


def _run(job: str, users: tuple[int, ...], engine: sa.Engine, url: str, config: Config) -> None:
    runner.execute(
        job,
        runner.job_function(job),
        engine=engine,
        database_url=url,
        config=config,
        scope=Scope.users(*users),
        trigger="event",
    )


def run_worker(
    engine: sa.Engine,
    database_url: str,
    config: Config,
    *,
    stop: threading.Event | None = None,
    once: bool = False,
) -> WorkerStats:
    """Drain the queue; with ``once``, stop when it is empty, else poll until ``stop`` is set."""
    stop = stop or threading.Event()
    stats = WorkerStats()
    while not stop.is_set():
        claimed = process_batch(engine, database_url, config, stats=stats)
        if claimed == 0:
            if once:
                break
            stop.wait(config.worker.poll_interval_s)
    return stats
