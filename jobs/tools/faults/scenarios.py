"""The fault scenarios: each breaks something for real and returns its figures.

Every scenario takes a prepared :class:`~jobs.tools.faults.world.World` (its own database),
runs real processes against it, injects its fault, and returns a dict of figures with
``checks`` (the independent SQL invariants of ``jobs.storage.invariants`` after the fault)
and ``violations`` (their sum, plus the scenario's own broken promises): zero is a pass.
A reader loops the API query through each one (``reader``: reads, bad reads, p99).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jobs import runner
from jobs.errors import RunConflictError
from jobs.storage import engine as engine_mod
from jobs.storage import faults as fault_store
from jobs.storage import invariants
from jobs.tools.faults import proxy as proxy_mod
from jobs.tools.faults import reader as reader_mod
from jobs.tools.faults import world as world_mod
from jobs.tools.faults.world import World

Scenario = Callable[..., dict[str, Any]]


def _reader(world: World, seed: int = 0) -> reader_mod.Reader:
    with world.engine.connect() as conn:
        users = fault_store.listed_users(conn, world.version)
    if not users:
        raise RuntimeError("no served lists to read: run a clean nightly first")
    return reader_mod.Reader(world.url, world.version, users, world.config.scoring.top_k, seed)


IDLE_S = 3.0


def _start_writes(reader: reader_mod.Reader) -> None:
    """Let the reader measure an idle baseline, then mark what follows as during writes."""
    time.sleep(IDLE_S)
    reader.phase = "writes"


def _finish(world: World, figures: dict[str, Any], reader: reader_mod.Reader | None) -> dict:
    if reader is not None:
        reader.stop()
        figures["reader"] = reader.report()
    figures["checks"] = world.checks()
    broken = figures.setdefault("broken", {})
    figures["violations"] = (
        invariants.violations(figures["checks"])
        + sum(int(v) for v in broken.values())
        + (figures["reader"]["bad_reads"] if reader is not None else 0)
    )
    return figures


def _nightly(world: World, **kw: Any) -> world_mod.Job:
    return world_mod.launch(world, "run", "match", **kw)


def _mid_write(world: World, timeout_s: float = 120.0) -> int:
    """Wait until a nightly is running and has COPYed rows into its stage; its run id."""
    run_id: int = world_mod.wait_for(
        lambda: world_mod.running_run(world), timeout_s=timeout_s, what="a running match run"
    )
    world_mod.wait_for(
        lambda: world_mod.stage_rows(world, run_id) > 0,
        timeout_s=timeout_s,
        poll_s=0.02,
        what=f"rows in run {run_id}'s stage",
    )
    return run_id


def clean_nightly(world: World) -> dict[str, Any]:
    """A nightly match with no fault: the baseline (its time, its served set)."""
    job = _nightly(world)
    code, elapsed = job.finish()
    rows, digest = world_mod.served_digest(world)
    figures: dict[str, Any] = {"exit_code": code, "seconds": round(elapsed, 2), "rows": rows}
    figures["broken"] = {"clean_run_failed": int(code != 0)}
    figures["digest"] = digest
    return _finish(world, figures, None)


def kill_driver(world: World, clean_s: float) -> dict[str, Any]:
    """SIGKILL the driver's process group mid-COPY; detect it by the lease; rerun."""
    before = world_mod.served_digest(world)
    reader = _reader(world)
    with reader:
        _start_writes(reader)
        job = _nightly(world)
        run_id = _mid_write(world)
        killed_at = time.monotonic()
        job.signal(signal.SIGKILL)
        job.wait()
        reader.phase = "after_kill"
        # Detection: the sweep every worker runs marks the silent run abandoned.
        world_mod.wait_for(
            lambda: run_id in runner.abandon_stale(world.engine, world.config, runner.utcnow()),
            timeout_s=60,
            poll_s=0.1,
            what=f"run {run_id} abandoned",
        )
        detected_s = time.monotonic() - killed_at
        served_after_kill = world_mod.served_digest(world)
        reader.phase = "writes"
        rerun = _nightly(world)
        code, rerun_s = rerun.finish()
        reader.phase = "idle"
        time.sleep(0.5)
    figures: dict[str, Any] = {
        "killed_run": run_id,
        "detection_s": round(detected_s, 2),
        "lease_s": world.config.runner.lease_s,
        "rerun_s": round(rerun_s, 2),
        "clean_s": round(clean_s, 2),
        "rerun_exit_code": code,
    }
    figures["broken"] = {
        "old_set_not_served_after_kill": int(served_after_kill != before),
        "rerun_failed": int(code != 0),
        "rerun_differs_from_clean": int(world_mod.served_digest(world) != before),
    }
    return _finish(world, figures, reader)


def pause_past_lease(world: World, at: str) -> dict[str, Any]:
    """SIGSTOP a nightly (``at``: ``start`` as soon as it runs, ``write`` mid-COPY) past its
    lease, let a second nightly take over and finish, SIGCONT the first: it writes nothing."""
    with world.engine.connect() as conn:
        first_id = fault_store.last_run_id(conn)
    reader = _reader(world)
    with reader:
        _start_writes(reader)
        paused = _nightly(world)
        if at == "write":
            stalled = _mid_write(world)
        else:
            stalled = world_mod.wait_for(
                lambda: world_mod.running_run(world), timeout_s=120, poll_s=0.01, what="a run"
            )
        paused.signal(signal.SIGSTOP)
        time.sleep(world.config.runner.lease_s + 1.0)
        successor = _nightly(world)
        successor_code, successor_s = successor.finish()
        with world.engine.connect() as conn:
            after_successor = world_mod.served_digest(world)
            stamps = fault_store.served_stamps(conn, world.version)
        paused.signal(signal.SIGCONT)
        paused_code, _ = paused.finish()
        reader.phase = "idle"
        time.sleep(0.5)
    with world.engine.connect() as conn:
        stalled_row = fault_store.run_row(conn, stalled)
        runs = fault_store.runs_since(conn, "match", first_id)
    successor_row = next((r for r in runs if r["id"] != stalled), None)
    figures: dict[str, Any] = {
        "paused_at": at,
        "paused_run": stalled,
        "paused_run_status": stalled_row["status"],
        "paused_exit_code": paused_code,
        "paused_log": paused.tail(1),
        "successor_status": successor_row["status"] if successor_row else None,
        "successor_s": round(successor_s, 2),
    }
    figures["broken"] = {
        "successor_failed": int(successor_code != 0),
        # The paused run may not overwrite its abandonment, nor change what is served.
        "paused_run_not_abandoned": int(stalled_row["status"] != "abandoned"),
        "served_changed_by_paused_run": int(world_mod.served_digest(world) != after_successor),
        "served_stamps_changed": int(world_mod.served_stamps(world) != stamps),
    }
    return _finish(world, figures, reader)


def _launcher(url: str, config: Any, barrier: Any, rounds: int, results: Any) -> None:
    """One of N processes: each round, all start the same (job, scope) at once."""
    engine = engine_mod.create_engine(url)
    for round_no in range(rounds):
        barrier.wait()
        won = 0
        try:
            with runner.tracked("feed", "all", engine=engine, config=config, trigger="on_demand"):
                won = 1
                # Hold the slot until every launcher of the round has tried.
                barrier.wait()
        except RunConflictError:
            barrier.wait()
        results.put((round_no, won))
    engine.dispose()


def launcher_storm(world: World, launchers: int = 10, rounds: int = 10) -> dict[str, Any]:
    """``launchers`` processes released at once on one (job, scope), ``rounds`` times:
    exactly one may run each time."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(launchers)
    results = spawn.Queue()
    procs = [
        spawn.Process(target=_launcher, args=(world.url, world.config, barrier, rounds, results))
        for _ in range(launchers)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    winners: dict[int, int] = {}
    for _ in range(launchers * rounds):
        round_no, won = results.get(timeout=300)
        winners[round_no] = winners.get(round_no, 0) + won
    for proc in procs:
        proc.join(timeout=60)
    figures: dict[str, Any] = {
        "launchers": launchers,
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 2),
        "winners_per_round": sorted(set(winners.values())),
    }
    figures["broken"] = {
        "rounds_without_exactly_one_run": sum(1 for n in winners.values() if n != 1),
        "launcher_crashed": sum(1 for p in procs if p.exitcode != 0),
    }
    return _finish(world, figures, None)


def exclusions_during_nightly(world: World, changes: int = 30, seed: int = 0) -> dict[str, Any]:
    """Blocks, passes, likes, deactivations and filter changes at random moments while a
    nightly computes: none of the forbidden pairs may be served after its swap."""
    rng = random.Random(seed)
    with world.engine.connect() as conn:
        pairs = fault_store.served_pairs(conn, world.version, 20 * changes)
    rng.shuffle(pairs)
    reader = _reader(world, seed)
    made = {"block": 0, "pass": 0, "like": 0, "deactivate": 0, "filters": 0}
    with reader:
        _start_writes(reader)
        job = _nightly(world)
        world_mod.wait_for(
            lambda: world_mod.running_run(world), timeout_s=120, poll_s=0.01, what="a run"
        )
        while job.proc.poll() is None and sum(made.values()) < changes and pairs:
            user, candidate = pairs.pop()
            kind = rng.choice(list(made))
            reader.touch(user, candidate)
            with world.engine.begin() as conn:
                if kind == "deactivate":
                    fault_store.deactivate(conn, candidate)
                elif kind == "filters":
                    fault_store.narrow_age_range(conn, user)
                else:
                    fault_store.record_exclusion(conn, user, candidate, kind)
            made[kind] += 1
            time.sleep(rng.uniform(0.0, 0.3))
        code, elapsed = job.finish()
        reader.phase = "idle"
        time.sleep(0.5)
    figures: dict[str, Any] = {"changes": made, "nightly_s": round(elapsed, 2), "exit": code}
    figures["broken"] = {"nightly_failed": int(code != 0)}
    return _finish(world, figures, reader)


def cut_connection(world: World, at: str, cuts: int = 2) -> dict[str, Any]:
    """Every process of a nightly reaches PostgreSQL through a proxy that cuts ``cuts``
    COPY transactions (``at``: ``copy`` mid-COPY, ``commit`` after the server committed,
    before the client heard): the shards retry, the output equals a clean run's."""
    before = world_mod.served_digest(world)
    proxy = proxy_mod.for_url(world.url, at, cuts)
    reader = _reader(world)
    try:
        with reader:
            _start_writes(reader)
            job = _nightly(world, url=proxy_mod.proxied_url(proxy, world.url))
            code, elapsed = job.finish()
            reader.phase = "idle"
            time.sleep(0.5)
    finally:
        proxy.close()
    with world.engine.connect() as conn:
        runs = fault_store.runs_since(conn, "match", 0)
    figures: dict[str, Any] = {
        "at": at,
        "cuts_made": proxy.cuts_made,
        "exit_code": code,
        "seconds": round(elapsed, 2),
        "last_status": runs[-1]["status"],
    }
    figures["broken"] = {
        "run_failed": int(code != 0),
        "no_cut_made": int(proxy.cuts_made == 0),
        "rows_differ_from_clean": int(world_mod.served_digest(world) != before),
    }
    return _finish(world, figures, reader)


def terminate_backends(world: World, database: str, what: str) -> dict[str, Any]:
    """``pg_terminate_backend`` the nightly's sessions: ``copy`` each COPY as it runs (the
    shards retry: the run succeeds), ``all`` every session of the nightly at once mid-write
    (the run may fail, but cleanly: the old set served, no stage left)."""
    before = world_mod.served_digest(world)
    reader = _reader(world)
    admin = engine_mod.create_engine(
        world_mod.tagged_url(world.url, "faults-admin"), isolation_level="AUTOCOMMIT"
    )
    terminated = 0
    with reader:
        _start_writes(reader)
        job = _nightly(world)
        run_id = _mid_write(world)
        with admin.connect() as conn:
            if what == "copy":
                deadline = time.monotonic() + 60
                while job.proc.poll() is None and time.monotonic() < deadline and terminated < 3:
                    terminated += fault_store.terminate_sessions(conn, database, "COPY%")
                    time.sleep(0.01)
            else:
                # Every session of the nightly, busy or idle in its pool, until one is hit.
                deadline = time.monotonic() + 60
                while job.proc.poll() is None and time.monotonic() < deadline and not terminated:
                    terminated = fault_store.terminate_sessions(
                        conn, database, "%", busy_only=False
                    )
                    time.sleep(0.01)
        code, elapsed = job.finish()
        reader.phase = "idle"
        time.sleep(0.5)
    admin.dispose()
    with world.engine.connect() as conn:
        row = fault_store.run_row(conn, run_id)
    figures: dict[str, Any] = {
        "what": what,
        "terminated": terminated,
        "exit_code": code,
        "status": row["status"],
        "seconds": round(elapsed, 2),
        "error": (row["error"] or "").splitlines()[0] if row["error"] else None,
    }
    served = world_mod.served_digest(world)
    figures["broken"] = {
        "copy_retry_failed": int(what == "copy" and code != 0),
        "nothing_terminated": int(terminated == 0),
        # Whatever the outcome, the set served is a whole one: the old, or the clean new.
        "served_not_old_nor_clean": int(served != before),
        "error_not_plain": int(any(m in (row["error"] or "") for m in ("\x1b", "Traceback"))),
    }
    return _finish(world, figures, reader)


def kill_actors(world: World, beyond_limit: bool) -> dict[str, Any]:
    """SIGKILL a ShardScorer actor mid-write: once (Ray restarts it, the shard is retried,
    the output equals a clean run's), or every actor again and again, more times than
    ``ray.max_retries`` (the run fails cleanly: one plain error, the old set served, no
    stage left)."""
    before = world_mod.served_digest(world)
    reader = _reader(world)
    kills = 0
    limit = world.config.ray.max_retries
    budget = (limit + 2) * world.config.ray.num_actors
    with reader:
        _start_writes(reader)
        job = _nightly(world)
        run_id = _mid_write(world)
        while job.proc.poll() is None and kills < (budget if beyond_limit else 1):
            for pid in job.pids("ShardScorer")[:1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
            time.sleep(0.3 if beyond_limit else 0.02)
        code, elapsed = job.finish()
        reader.phase = "idle"
        time.sleep(0.5)
    with world.engine.connect() as conn:
        row = fault_store.run_row(conn, run_id)
    error = row["error"] or ""
    served = world_mod.served_digest(world)
    figures: dict[str, Any] = {
        "kills": kills,
        "max_restarts": limit,
        "exit_code": code,
        "status": row["status"],
        "seconds": round(elapsed, 2),
        "error": error.splitlines()[0] if error else None,
    }
    figures["broken"] = {
        "no_kill_made": int(kills == 0),
        "within_limit_failed": int(not beyond_limit and code != 0),
        "served_not_old_nor_clean": int(served != before),
        "error_not_plain": int(any(m in error for m in ("\x1b", "Traceback"))),
    }
    return _finish(world, figures, reader)


def _drain(world: World, timeout_s: float) -> dict[str, int]:
    def drained() -> dict[str, int] | None:
        with world.engine.connect() as conn:
            counts = fault_store.event_counts(conn)
        return counts if counts["unfinished"] == 0 else None

    result: dict[str, int] = world_mod.wait_for(
        drained, timeout_s=timeout_s, poll_s=0.5, what="the event queue drained"
    )
    return result


def _enqueue(world: World, n: int, rng: random.Random) -> None:
    kinds = ["quiz_submitted", "interests_changed", "user_changed"]
    users = [rng.randint(1, world.n_users) for _ in range(n)]
    with world.engine.begin() as conn:
        active = set(fault_store.listed_users(conn, world.version))
        users = [u if u in active else next(iter(active)) for u in users]
        fault_store.enqueue_many(conn, [rng.choice(kinds) for _ in users], users)


def event_storm(world: World, events: int, seed: int = 0) -> dict[str, Any]:
    """``events`` events for the world's users enqueued while a nightly runs and a worker
    drains them: every one ends done or coalesced (none lost, none dead)."""
    rng = random.Random(seed)
    reader = _reader(world, seed)
    with reader:
        _start_writes(reader)
        worker = world_mod.launch(world, "worker")
        job = _nightly(world)
        world_mod.wait_for(
            lambda: world_mod.running_run(world), timeout_s=120, poll_s=0.01, what="a run"
        )
        started = time.monotonic()
        for _ in range(10):
            _enqueue(world, events // 10, rng)
            time.sleep(0.2)
        code, nightly_s = job.finish()
        counts = _drain(world, timeout_s=600)
        drained_s = time.monotonic() - started
        worker.signal(signal.SIGTERM)
        worker_code, _ = worker.finish(timeout_s=120)
        reader.phase = "idle"
        time.sleep(0.5)
    figures: dict[str, Any] = {
        "events": events,
        "events_by_status": counts,
        "drain_s": round(drained_s, 1),
        "nightly_s": round(nightly_s, 2),
        "worker_exit_code": worker_code,
    }
    figures["broken"] = {
        "nightly_failed": int(code != 0),
        "events_lost_or_dead": counts.get("dead", 0) + counts["unfinished"],
        "events_miscounted": int(
            counts.get("done", 0) + counts.get("coalesced", 0) + counts.get("dead", 0) != events
        ),
        "worker_stopped_badly": int(worker_code != 0),
    }
    return _finish(world, figures, reader)


def kill_worker(world: World, trials: int, events_per_trial: int, seed: int = 0) -> dict[str, Any]:
    """SIGKILL the event worker at a random moment ``trials`` times (a fresh worker takes
    over each time), then SIGTERM one mid-batch: every event ends done or coalesced, and a
    killed worker's claims are reclaimed (the seconds from kill to reclaim, p50/p95)."""
    rng = random.Random(seed)
    reclaim_s: list[float] = []
    killed_with_claims = 0
    worker = world_mod.launch(world, "worker")
    for _ in range(trials):
        _enqueue(world, events_per_trial, rng)
        # At a random point of a batch: once one runs, a little later.
        with contextlib.suppress(TimeoutError):
            world_mod.wait_for(lambda: _busy(world), timeout_s=30, poll_s=0.01, what="a batch")
        time.sleep(rng.uniform(0.0, 0.5))
        with world.engine.connect() as conn:
            runs = fault_store.running_worker_runs(conn)
        worker.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        worker.finish()
        worker = world_mod.launch(world, "worker")
        with world.engine.connect() as conn:
            if fault_store.claimed_by(conn, runs) == 0:
                continue
        killed_with_claims += 1

        def reclaimed(dead: list[int] = runs) -> bool:
            with world.engine.connect() as conn:
                return fault_store.claimed_by(conn, dead) == 0

        world_mod.wait_for(reclaimed, timeout_s=120, poll_s=0.1, what="claims reclaimed")
        reclaim_s.append(time.monotonic() - killed_at)
    # SIGTERM mid-batch: the worker finishes the batch in hand, then exits 0.
    _enqueue(world, events_per_trial, rng)
    world_mod.wait_for(
        lambda: _busy(world), timeout_s=120, poll_s=0.02, what="a worker batch running"
    )
    worker.signal(signal.SIGTERM)
    term_code, _ = worker.finish(timeout_s=300)
    with world.engine.connect() as conn:
        left_processing = fault_store.event_counts(conn).get("processing", 0)
    worker = world_mod.launch(world, "worker")
    counts = _drain(world, timeout_s=600)
    worker.signal(signal.SIGTERM)
    worker.finish(timeout_s=120)
    total = events_per_trial * (trials + 1)
    figures: dict[str, Any] = {
        "trials": trials,
        "kills_with_claims_in_hand": killed_with_claims,
        "reclaim_p50_s": _percentile(reclaim_s, 50),
        "reclaim_p95_s": _percentile(reclaim_s, 95),
        "events": total,
        "events_by_status": counts,
        "sigterm_exit_code": term_code,
    }
    figures["broken"] = {
        "events_lost_or_dead": counts.get("dead", 0) + counts["unfinished"],
        "events_miscounted": int(
            counts.get("done", 0) + counts.get("coalesced", 0) + counts.get("dead", 0) != total
        ),
        "sigterm_left_claims": left_processing,
        "sigterm_exit_nonzero": int(term_code != 0),
    }
    return _finish(world, figures, None)


def _busy(world: World) -> bool:
    with world.engine.connect() as conn:
        return bool(fault_store.running_worker_runs(conn))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q)), 2)
