"""The event worker: drains the app's event queue and refreshes what each event touches.

No Ray here: every job runs in-process on the affected users only, so a quiz submission
reaches ``match_scores`` within seconds. One batch of claimed events becomes one plan:

- ``quiz_submitted`` U      → quiz job for U, then match for U
- ``interests_changed`` U   → interests job for U, then match for U
- ``rating_created`` R → P  → ratings job for R and P (R's preferences, P's aggregates),
                              then match for R and P
- ``user_changed`` U, ``profile_updated`` U → match for U (filters or profile changed)

and, settled first in one transaction that also completes them (the *immediate step*):

- ``like_created`` U → O    → the pair leaves both users' lists (every version) at once;
                              a mutual like also makes a ``mutual_match`` card for both;
                              then match for U and O (refill); the likes job's rates and
                              vectors are one global fit and follow at the nightly
- ``user_deactivated`` U    → (if U is inactive now) U's rows leave every derived table and
                              every other list at once; then match for at most
                              ``fanout.max_reverse`` users who listed U (refill), the rest
                              marked stale. A user active again is handled as
                              ``profile_updated``.
- ``conversation_revived`` U ↔ O → a ``conversation_revived`` card for both (none when the
                              pair is passed or blocked, or either user inactive)

A refill that fails marks its users stale for the nightly's backfill: the event's promise
(the pair or the user is gone) is already kept. A refill has no fan-out: its users' own data
did not change. A changed user's match run has a bounded reverse fan-out (see
:mod:`jobs.match.users`), which the worker scores in follow-up match runs once the changed
users' own lists have committed: a pair that now fails a filter leaves in the first run, and
the lists that lost one are refilled first (up to ``fanout.max_reverse``; the rest stay
stale); a failed follow-up marks its users stale. Duplicate events coalesce: a claim takes every
pending duplicate of the events it picks, whatever batch they arrived in.

Each batch is a ``worker`` run in ``job_runs`` and its claim expires with that run (see
``jobs.storage.events``). Outcomes of a batch:

- a job of the plan is already running (``RunConflictError``: another worker has the same
  users, or a killed worker's run has not aged out yet): nothing failed, so the events go
  back without spending an attempt and wait an exponential, jittered backoff;
- it fails otherwise: it is split in halves, recursively, so only the poison event spends
  its attempt; a failed event waits the backoff too and after ``worker.max_attempts``
  claims is parked as ``dead`` with the error (at once if the event itself is invalid:
  ``ScopeError``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa

from jobs import match, runner
from jobs.config import Config
from jobs.context import JobResult, Scope
from jobs.errors import JobError, RunConflictError, ScopeError
from jobs.match import core as match_core
from jobs.match.users import Fanout
from jobs.match.warm import WarmPopulation
from jobs.storage import events as event_store
from jobs.storage import feed as feed_store
from jobs.storage import immediate, scores, set_states
from jobs.storage.engine import writer

logger = logging.getLogger(__name__)

# event kind -> the signal job that refreshes its user first. A like has none: the likes
# job is one factorisation over everyone (it refuses a user scope), so the liker's rates
# and vectors follow at the nightly; the pair itself leaves both lists at once.
SIGNAL_JOB_FOR_EVENT = {
    "quiz_submitted": "quiz",
    "interests_changed": "interests",
}
# kinds whose effect is settled in the immediate step, which also completes them
IMMEDIATE_KINDS = ("like_created", "user_deactivated", "conversation_revived")


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
    signal.update({job: set() for job in SIGNAL_JOB_FOR_EVENT.values() if job not in signal})
    match: set[int] = set()
    for event in batch:
        key = (event.kind, event.user_id, event.other_user_id)
        if key in seen:
            coalesced.append(event.id)
            continue
        seen.add(key)
        kept.append(event.id)
        if event.kind in IMMEDIATE_KINDS:
            continue  # settled by the immediate step; its refill is planned there
        match.add(event.user_id)
        if event.kind in SIGNAL_JOB_FOR_EVENT:
            signal[SIGNAL_JOB_FOR_EVENT[event.kind]].add(event.user_id)
        elif event.kind == "rating_created" and event.other_user_id is not None:
            signal["ratings"].update((event.user_id, event.other_user_id))
            match.add(event.other_user_id)
    return Plan(
        signal_users={
            job: tuple(sorted(users))
            for job, users in signal.items()
            if users and job in runner.JOB_MODULES
        },
        match_users=tuple(sorted(match)),
        kept_ids=tuple(kept),
        coalesced_ids=tuple(coalesced),
    )


@dataclasses.dataclass
class WorkerStats:
    batches: int = 0
    events_done: int = 0
    events_coalesced: int = 0
    events_failed: int = 0  # failed and returned to the queue, or parked as dead
    events_dead: int = 0
    events_deferred: int = 0  # handed back without an attempt: their work was running
    sub_batches: int = 0  # extra runs of halves while isolating a failure
    pairs_removed: int = 0  # match_scores rows a like, pass or block removed at once
    users_forgotten: int = 0  # deactivated users removed from every derived table
    cards_created: int = 0  # mutual-match and revived-conversation cards of the immediate step
    marked_stale: int = 0  # users left to the nightly's backfill (past the cap, failed refill)


def backoff_s(n: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """The wait before the ``n``-th retry: base · 2^(n−1) capped at ``max_s``, of which a
    random half is dropped ("equal jitter"), so workers that failed together spread out."""
    ceiling = min(max_s, base_s * 2.0 ** max(n - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def worker_scope() -> str:
    """The ``job_runs`` scope of this process's batches: one batch at a time per process."""
    return f"worker:{socket.gethostname()}:{os.getpid()}"[:128]


# How often an idle worker asks whether its held population is due for a reload.
WARM_CHECK_S = 5.0


def warm_population(config: Config) -> WarmPopulation | None:
    """The population a long-running worker holds between batches (``worker.warm``)."""
    return WarmPopulation(config.worker.reload_seconds) if config.worker.warm else None


def process_batch(
    engine: sa.Engine,
    database_url: str,
    config: Config,
    stats: WorkerStats | None = None,
    rng: random.Random | None = None,
    warm: WarmPopulation | None = None,
) -> int:
    """Claim and process one batch; return how many events were claimed (0 = none due).

    ``warm``: the worker's held population; the batch's match runs use it and re-read the
    users its events name (:mod:`jobs.match.warm`). Without it each match run is cold.
    """
    stats = stats if stats is not None else WorkerStats()
    now = runner.utcnow()
    # A killed worker leaves its runs 'running'; free their slots once they age out.
    runner.abandon_stale(engine, config, now)
    batch = event_store.claim(engine, config.worker.batch_size, now, config.runner.lease_s)
    if not batch:
        return 0
    with runner.tracked(
        "worker", worker_scope(), engine=engine, config=config, trigger="event"
    ) as run:
        event_store.attach(engine, [e.id for e in batch], run.run_id)
        if warm is not None:
            # Whatever the batch's outcome, these users' rows may have changed.
            warm.touch(u for e in batch for u in (e.user_id, e.other_user_id) if u is not None)
        before = dataclasses.replace(stats)
        handler = _Batch(
            engine, database_url, config, run.run_id, stats, rng or random.Random(), warm
        )
        settled = [e for e in batch if e.kind in IMMEDIATE_KINDS]
        recomputed = [e for e in batch if e.kind not in IMMEDIATE_KINDS]
        if settled:
            handler.settle(settled)
        if recomputed:
            handler.process(recomputed)
        stats.batches += 1
        run.figures.counts.update(
            events=len(batch),
            **{
                f.name: getattr(stats, f.name) - getattr(before, f.name)
                for f in dataclasses.fields(stats)
                if f.name != "batches"
            },
        )
    return len(batch)


@dataclasses.dataclass
class _Batch:
    engine: sa.Engine
    url: str
    config: Config
    run_id: int
    stats: WorkerStats
    rng: random.Random
    warm: WarmPopulation | None = None

    def process(self, batch: Sequence[event_store.Event]) -> None:
        plan = plan_batch(batch)
        try:
            for job, users in plan.signal_users.items():
                self._run(job, users)
            # The changed users' own lists commit first; those who list them (or now may)
            # follow in a run of their own, so nobody waits for the fan-out.
            own = self._run("match", plan.match_users, fanout="own")
            self._run("feed", plan.match_users)
        except RunConflictError as exc:
            self._release(batch, exc)
            return
        except Exception as exc:
            # Recorded in job_runs by the runner; here it is the events' outcome.
            groups = _groups(batch)
            if len(groups) > 1:
                self._isolate(groups, exc)
            else:
                self._fail(batch, exc)
            return
        self._follow_up(plan.match_users, own, runner.utcnow())
        done_at = runner.utcnow()
        done = event_store.finish(self.engine, list(plan.kept_ids), self.run_id, "done", done_at)
        coalesced = event_store.finish(
            self.engine, list(plan.coalesced_ids), self.run_id, "coalesced", done_at
        )
        self.stats.events_done += done
        self.stats.events_coalesced += coalesced
        lost = len(batch) - done - coalesced
        if lost:
            logger.warning(
                "%d events were reclaimed by another worker before this one finished them",
                lost,
                extra={"action": "worker.lost_claim", "run_id": self.run_id},
            )
        logger.info(
            "processed %d events (%d coalesced) for %d users",
            len(batch),
            len(plan.coalesced_ids),
            len(plan.match_users),
            extra={"action": "worker.batch", "users": len(plan.match_users)},
        )

    def settle(self, batch: Sequence[event_store.Event]) -> None:
        """The immediate step: exclusions, deactivations and cards, committed together with
        the events' completion; then the refill of the lists they shortened."""
        plan = plan_batch(batch)
        kept = [e for e in batch if e.id in set(plan.kept_ids)]
        version = self.config.algorithm_version
        cap = self.config.fanout.max_reverse
        now = runner.utcnow()
        likes = [(e.user_id, int(e.other_user_id or 0)) for e in kept if e.kind == "like_created"]
        revived = [
            (e.user_id, int(e.other_user_id or 0)) for e in kept if e.kind == "conversation_revived"
        ]
        asked_out = sorted({e.user_id for e in kept if e.kind == "user_deactivated"})
        try:
            with writer(self.engine).begin() as conn:
                kinds = immediate.pair_likes(conn, likes + revived)
                recorded = [(a, b) for a, b in likes if (a, b) in kinds or (b, a) in kinds]
                removed = immediate.delete_pairs(conn, recorded)
                mutual = feed_store.mutual_likes(conn, recorded)
                cards = feed_store.insert_pair_cards(
                    conn, mutual, cause="mutual_match", version=version, now=now
                )
                gone = set(
                    immediate.inactive_users(
                        conn, [u for pair in revived for u in pair] + asked_out
                    ).tolist()
                )
                refused = ("pass", "block")
                revived_ok = [
                    (a, b)
                    for a, b in revived
                    if a not in gone
                    and b not in gone
                    and kinds.get((a, b)) not in refused
                    and kinds.get((b, a)) not in refused
                ]
                cards += feed_store.insert_pair_cards(
                    conn, revived_ok, cause="conversation_revived", version=version, now=now
                )
                deactivated = [u for u in asked_out if u in gone]
                listers = scores.users_listing(
                    conn,
                    version,
                    deactivated,
                    exclude=deactivated,
                    limit=cap + 100_000,
                )
                forgotten = immediate.forget_users(conn, deactivated)
                stale = set_states.mark_stale(conn, version, listers[cap:], "fanout_cap", now)
                done = event_store.finish_in(conn, list(plan.kept_ids), self.run_id, "done", now)
                coalesced = event_store.finish_in(
                    conn, list(plan.coalesced_ids), self.run_id, "coalesced", now
                )
        except Exception as exc:
            self._fail(batch, exc)
            return
        self.stats.events_done += done
        self.stats.events_coalesced += coalesced
        self.stats.pairs_removed += removed
        self.stats.users_forgotten += len(deactivated)
        self.stats.cards_created += cards
        self.stats.marked_stale += stale
        logger.info(
            "settled %d events at once (%d coalesced): %d rows of %d pairs removed, %d users "
            "deactivated (%s rows), %d cards",
            len(batch),
            coalesced,
            removed,
            len(recorded),
            len(deactivated),
            sum(forgotten.values()),
            cards,
            extra={"action": "worker.settle", "run_id": self.run_id, "forgotten": forgotten},
        )
        # Lists that lost a row: their users' own data did not change, so nobody else's
        # list needs them rescored.
        refill = ({u for pair in likes for u in pair} | set(listers[:cap].tolist())) - gone
        back = {u for u in asked_out if u not in gone}  # active again: a profile change
        self._refill(tuple(sorted(refill - back)), now, fanout="none")
        self._refill(tuple(sorted(back)), now, fanout="own")

    def _refill(
        self,
        users: tuple[int, ...],
        now: dt.datetime,
        fanout: Fanout = "inline",
        feed: bool = True,
    ) -> None:
        """Rescore lists the immediate step shortened (``none``), users whose own data changed
        (``own``: their fan-out follows in one more run), or a batch's deferred fan-out
        (``reverse``); on failure leave them to the nightly (the events' promise is kept)."""
        try:
            if users:
                matched = self._run("match", users, fanout=fanout)
                if feed:
                    self._run("feed", users)
                if fanout == "own":
                    self._follow_up(users, matched, now)
        except Exception as exc:
            with writer(self.engine).begin() as conn:
                marked = set_states.mark_stale(
                    conn, self.config.algorithm_version, users, "refill_failed", now
                )
            self.stats.marked_stale += marked
            logger.warning(
                "refill of %d users failed (%s); marked stale for the nightly's backfill",
                len(users),
                runner.error_chain(exc),
                extra={"action": "worker.refill_failed", "run_id": self.run_id},
            )

    def _follow_up(self, users: tuple[int, ...], own: JobResult, now: dt.datetime) -> None:
        """After an ``own`` match run: refill (up to the cap) the lists that lost a pair with
        ``users``, then score ``users``' reverse fan-out. Those past the cap stay stale."""
        unlisted = [int(u) for u in own.extra.get("unlisted_user_ids", ())]
        self._refill(tuple(unlisted[: self.config.fanout.max_reverse]), now, fanout="none")
        self._refill(users, now, fanout="reverse", feed=False)

    def _run(self, job: str, users: tuple[int, ...], fanout: Fanout = "inline") -> JobResult:
        fn = runner.job_function(job)
        if job == "match":
            fn = functools.partial(match.run, warm=self.warm, fanout=fanout)
        _, result = runner.execute(
            job,
            fn,
            engine=self.engine,
            database_url=self.url,
            config=self.config,
            scope=Scope.users(*users),
            trigger="event",
        )
        return result

    def _isolate(self, groups: list[list[event_store.Event]], exc: Exception) -> None:
        """Run each half of a failed batch on its own, so the valid events still get done."""
        half = len(groups) // 2
        logger.warning(
            "batch of %d distinct events failed (%s); retrying it in halves of %d and %d",
            len(groups),
            exc,
            half,
            len(groups) - half,
            extra={"action": "worker.isolate", "run_id": self.run_id},
        )
        for part in (groups[:half], groups[half:]):
            self.stats.sub_batches += 1
            self.process([event for group in part for event in group])

    def _retry_at(self, n: int) -> dt.datetime:
        wait = backoff_s(
            n, self.config.worker.backoff_base_s, self.config.worker.backoff_max_s, self.rng
        )
        return runner.utcnow() + dt.timedelta(seconds=wait)

    def _release(self, batch: Sequence[event_store.Event], exc: RunConflictError) -> None:
        deferrals = max(e.deferrals for e in batch) + 1
        retry_at = self._retry_at(deferrals)
        ids = [e.id for e in batch]
        released = event_store.release(
            self.engine, ids, self.run_id, str(exc), now=runner.utcnow(), retry_at=retry_at
        )
        self.stats.events_deferred += released
        logger.info(
            "%d events deferred until %s (deferral %d, no attempt spent): %s",
            released,
            f"{retry_at:%H:%M:%S}Z",
            deferrals,
            exc,
            extra={"action": "worker.defer", "event_ids": ids, "run_id": self.run_id},
        )

    def _fail(self, batch: Sequence[event_store.Event], exc: Exception) -> None:
        ids = [e.id for e in batch]
        # A scope error is the event's own (an invalid user id): no retry can succeed.
        max_attempts = 0 if isinstance(exc, ScopeError) else self.config.worker.max_attempts
        outcome = event_store.fail(
            self.engine,
            ids,
            self.run_id,
            f"event {ids[0]} ({batch[0].kind} user {batch[0].user_id}): " + runner.error_chain(exc),
            max_attempts=max_attempts,
            now=runner.utcnow(),
            retry_at=self._retry_at(max(e.attempts for e in batch)),
        )
        self.stats.events_failed += outcome["dead"] + outcome["retry"]
        self.stats.events_dead += outcome["dead"]
        logger.error(
            "event %d (%s user %d) failed (%d dead, %d to retry): %s",
            ids[0],
            batch[0].kind,
            batch[0].user_id,
            outcome["dead"],
            outcome["retry"],
            exc,
            extra={"action": "worker.fail", "event_ids": ids, "run_id": self.run_id},
        )


def _groups(batch: Sequence[event_store.Event]) -> list[list[event_store.Event]]:
    """The batch's events grouped by what they ask (duplicates together), in id order."""
    groups: dict[tuple[str, int, int | None], list[event_store.Event]] = {}
    for event in batch:
        groups.setdefault((event.kind, event.user_id, event.other_user_id), []).append(event)
    return list(groups.values())


def keep_warm(engine: sa.Engine, config: Config, warm: WarmPopulation) -> str | None:
    """While idle: do a reload that is due now (or the first load), so that no event waits
    for it; return its reason. A failure is left to the next batch, which reloads itself."""
    settings = match_core.settings_from_config(config)
    try:
        with engine.connect() as conn:
            reason = warm.reload_reason(conn, settings)
            if reason is not None:
                warm.prepare(conn, runner.utcnow(), settings, np.empty(0, dtype=np.int64))
    except JobError as exc:
        logger.warning(
            "idle reload of the warm population failed (%s); the next batch reloads",
            runner.error_chain(exc),
            extra={"action": "worker.warm_reload_failed"},
        )
        return None
    return reason


def run_worker(
    engine: sa.Engine,
    database_url: str,
    config: Config,
    *,
    stop: threading.Event | None = None,
    once: bool = False,
) -> WorkerStats:
    """Drain the queue until ``stop`` is set; with ``once``, stop when nothing is pending.

    With ``once``, events waiting out a backoff are waited for; events another live worker
    holds are its own.
    """
    stop = stop or threading.Event()
    stats = WorkerStats()
    rng = random.Random()
    warm = warm_population(config)
    poll_s = config.worker.poll_interval_s
    logger.info(
        "worker %s polling every %g s (%s)",
        worker_scope(),
        poll_s,
        "warm population" if warm is not None else "cold: each batch loads its region",
        extra={"action": "worker.start", "once": once, "warm": warm is not None},
    )
    checked_at = -float("inf")
    while not stop.is_set():
        if process_batch(engine, database_url, config, stats=stats, rng=rng, warm=warm):
            continue
        if warm is not None and not once and time.monotonic() - checked_at >= WARM_CHECK_S:
            # Idle: load at start and reload when due here rather than inside a batch.
            keep_warm(engine, config, warm)
            checked_at = time.monotonic()
            continue
        wait_s = poll_s
        if once:
            now = runner.utcnow()
            with engine.connect() as conn:
                due = event_store.pending_due_at(conn, now)
            if due is None:
                break
            wait_s = min(poll_s, max((due - now).total_seconds(), 0.01))
        stop.wait(wait_s)
    return stats
