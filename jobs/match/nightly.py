"""The nightly match run: a driver that shards users over :class:`ShardScorer` actors.

The driver loads the population and builds the candidate indexes once, puts both in the Ray
object store once (the population's arrays are read zero-copy by every actor; the indexes
travel as bytes and are deserialized once per actor), and hands out shards of user rows.
Each call scores one shard and replaces its users' rows in one transaction, so a shard that
is retried after an actor died rewrites the same rows instead of duplicating them. At most
two calls per actor are in flight (``ray.wait``), results are handled as they complete.

Without a cluster address the driver starts a bounded local Ray (``num_cpus``,
``object_store_memory``, no dashboard); with ``RAY_ADDRESS`` set (``ray job submit``) it
joins that cluster; either starts while the population loads in a thread. When Ray is
already initialised in the process (tests) it is reused and left running.
``ray.enabled: false`` runs the same actor class in-process, shard by shard.

``ShardScorer`` is a plain class: it is wrapped with ``ray.remote`` at the call site and can
be created directly in tests.

Why one file of ~750 lines: the driver, its actors and the swap sequence share the run's
state (shards in flight, retries, the fence, the figures); the pieces both paths use are
:mod:`jobs.match.core`, the SQL of the swap :mod:`jobs.storage.swap`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from compute import candidates, scoring
from compute.population import Population
from jobs import errors, progress, runner
from jobs.config import RayConfig, Retry
from jobs.context import JobContext, JobResult
from jobs.match import core
from jobs.storage import api, ledger, publish_guard, scores, set_states, swap
from jobs.storage import engine as engine_mod
from jobs.storage import population as population_store

RowArray = npt.NDArray[np.int64]
IN_FLIGHT_PER_ACTOR = 2
T = TypeVar("T")

logger = logging.getLogger(__name__)


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


class ShardScorer:
    """Scores shards of users and replaces their rows; one instance per worker.

    Parameters
    ----------
    population : Population
        The cleaned population (from the object store: arrays are shared, not copied).
    index_bytes : bytes
        ``CandidateIndexes.to_bytes()`` of the driver's indexes.
    settings : MatchSettings
    database_url : str
        Each scorer opens its own engine; no connection crosses a process boundary.
    computed_at : datetime
        The run's ``now``, stamped on every row.
    crash_marker : str or None
        Test only: the first call for shard ``crash_shard`` creates this file and kills
        the process (as an OOM kill would), so tests can watch the retry.
    crash_shard : int
    stage : str or None
        PostgreSQL nightly: COPY shards into this stage table (swapped in by the driver)
        instead of replacing users' rows in match_scores.
    guard : FilterSnapshot or None
        The filter snapshot taken before the population was loaded; required when
        ``stage`` is None, since each shard then publishes its own rows.
    run_id : int or None
        The driver's ``job_runs`` row. A shard that publishes its rows (``stage`` None)
        first checks that the run still holds its lease (``ledger.fence``); a stage is
        published only by the driver's swap, which checks it there.
    """

    def __init__(
        self,
        population: Population,
        index_bytes: bytes,
        settings: core.MatchSettings,
        database_url: str,
        computed_at: Any,
        crash_marker: str | None = None,
        crash_shard: int = 0,
        stage: str | None = None,
        guard: population_store.FilterSnapshot | None = None,
        run_id: int | None = None,
    ) -> None:
        import faiss

        if stage is None and guard is None:
            raise ValueError("a scorer that publishes its shards (stage=None) needs a guard")

        # Two CPU-bound things at once per core budget: one FAISS thread per actor.
        faiss.omp_set_num_threads(1)
        self._pop = population
        self._indexes = candidates.CandidateIndexes.from_bytes(index_bytes)
        self._settings = settings
        self._database_url = database_url
        self._computed_at = computed_at
        self._crash_marker = crash_marker
        self._crash_shard = crash_shard
        self._stage = stage
        self._guard = guard
        self._run_id = run_id
        self._engine: Any = None
        self._restarted = _actor_was_restarted()
        self._node_id = _ray_node_id()

    def _writer(self) -> Any:
        if self._engine is None:
            self._engine = engine_mod.writer(engine_mod.create_engine(self._database_url))
        return self._engine

    def count_shard(self, shard_id: int, rows: RowArray) -> RowArray:
        """Exposure pass: (n,) appearances in this shard's uncapped top-K lists."""
        return core.uncapped_counts(self._pop, self._indexes, rows, self._settings)

    def score_shard(
        self,
        shard_id: int,
        rows: RowArray,
        exposure_counts: RowArray | None = None,
        *,
        rewrite: bool = False,
    ) -> dict[str, Any]:
        """Score one shard and replace its users' rows in one transaction; its figures.

        ``rewrite``: the driver resubmits a shard whose first call was lost with its actor;
        that call may have committed, so its rows are replaced, not added.
        """
        if (
            self._crash_marker is not None
            and shard_id == self._crash_shard
            and not os.path.exists(self._crash_marker)
        ):
            with open(self._crash_marker, "w") as marker:
                marker.write(str(os.getpid()))
            os._exit(1)
        started = time.perf_counter()
        output = core.score_rows(self._pop, self._indexes, rows, self._settings, exposure_counts)
        computed = time.perf_counter()
        try:
            (deleted, written), attempts = _with_retries(
                lambda retry: self._write(output, rewrite=self._restarted or rewrite or retry),
                self._settings.write_retry,
                what=f"write of shard {shard_id}",
                on_retry=self.close,
            )
        except errors.JobError as exc:
            # Its causes would not survive the trip to the driver as exceptions.
            runner.keep_causes(exc)
            raise
        return {
            "shard": shard_id,
            "funnel": {**output.funnel, "rows_written": written, "rows_deleted": deleted},
            # (candidate rows, lists each appears in): summed by the driver into exposure.
            "exposure": np.unique(output.scored.cand_rows, return_counts=True),
            "compute_s": computed - started,
            "write_s": time.perf_counter() - computed,
            "write_attempts": attempts,
            "pid": os.getpid(),
            "node_id": self._node_id,
            "restarted_actor": self._restarted,
            "peak_rss_mb": _peak_rss_mb(),
        }

    def _write(self, output: core.ShardOutput, *, rewrite: bool) -> tuple[int, int]:
        """One transaction writing the shard's rows; ``(deleted, inserted)``.

        ``rewrite``: an earlier attempt may have committed — a restarted actor, or a retry
        after a connection lost during COMMIT, whose outcome the client cannot know.
        """
        with engine_mod.translate_errors("write transaction"), self._writer().begin() as conn:
            if self._stage is not None:
                return swap.write_stage_shard(
                    conn,
                    self._stage,
                    output.user_ids,
                    output.frame,
                    version=self._settings.version,
                    computed_at=self._computed_at,
                    rewrite=rewrite,
                )
            # Deletes then inserts the users' sets: a rerun after a commit is the same rows.
            assert self._guard is not None  # checked in __init__
            if self._run_id is not None:
                ledger.fence(conn, self._run_id, share=True)
            return scores.replace_user_sets(
                conn,
                output.user_ids,
                output.frame,
                version=self._settings.version,
                computed_at=self._computed_at,
                guard=self._guard,
            )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _with_retries(
    write: Callable[[bool], T],
    policy: Retry,
    *,
    what: str,
    on_retry: Callable[[], None],
) -> tuple[T, int]:
    """``write(retry)`` until it succeeds, retrying transient ``StorageError``s; its result
    and the attempts made.

    At most ``policy.write_attempts`` attempts; before attempt n+1 the caller waits between
    d/2 and d, d = min(``max_backoff_s``, ``backoff_s`` · 2^(n-1)): exponential backoff, with
    jitter so that actors cut off together do not reconnect together. ``on_retry`` runs
    before each wait (drop pooled connections). A last failure is raised naming the attempts.
    """
    for attempt in range(1, policy.write_attempts + 1):
        try:
            return write(attempt > 1), attempt
        except errors.StorageError as exc:
            if not exc.transient:
                raise
            if attempt == policy.write_attempts:
                raise errors.StorageError(
                    f"{what} failed after {attempt} attempts on transient database errors; "
                    "the database may be down or overloaded: check it and rerun",
                    transient=True,
                ) from exc
            delay = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
            logger.warning(
                "%s: attempt %d of %d failed (%s); retrying",
                what,
                attempt,
                policy.write_attempts,
                exc,
                extra={"action": "match.write_retry", "attempt": attempt},
            )
            on_retry()
            time.sleep(random.uniform(delay / 2, delay))
    raise AssertionError("unreachable: write_attempts >= 1")


def _actor_was_restarted() -> bool:
    """True inside a Ray actor that Ray has restarted after its process died."""
    import ray

    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    return context.get_actor_id() is not None and bool(context.was_current_actor_reconstructed)


def _ray_node_id() -> str | None:
    """The Ray node of this actor (hex id); None outside an actor (the in-process pool)."""
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return context.get_node_id() if context.get_actor_id() is not None else None


def shard_rows(order: RowArray, shard_size: int) -> list[RowArray]:
    """Consecutive runs of at most ``shard_size`` rows of ``order``, each sorted."""
    return [
        np.sort(order[start : start + shard_size]) for start in range(0, order.size, shard_size)
    ]


@dataclasses.dataclass
class _Pool:
    """What the nightly needs from an executor: run a method over shards, in any order."""

    map_shards: Callable[[str, list[tuple[Any, ...]]], Iterator[Any]]
    close: Callable[[], None]
    info: dict[str, Any]


def _in_process_pool(scorer: ShardScorer) -> _Pool:
    def map_shards(method: str, calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        for args in calls:
            yield getattr(scorer, method)(*args)

    return _Pool(map_shards, scorer.close, {"executor": "in_process"})


def _start_ray(cfg: RayConfig) -> bool:
    """Join the cluster at ``RAY_ADDRESS``, or start a bounded local Ray; True if started here.

    A Ray already initialised in this process (tests) is reused and left running.
    """
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        # Token authentication on, Ray's default for a new local cluster, but chosen
        # explicitly so that Ray does not print a notice about it on every run. Ray reads
        # the mode when it is imported: set later, the driver and its cluster would disagree.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        # On a cluster the actors' logs are the job's only record of them: send them to the
        # driver, whose output is what `ray job logs` shows.
        ray.init(address="auto", configure_logging=False, log_to_driver=True)
    else:
        ray.init(
            num_cpus=max(1, int(np.ceil(cfg.num_actors * cfg.num_cpus_per_actor))),
            object_store_memory=cfg.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
    return True


class _RayShardScorer:
    """A :class:`ShardScorer` in a Ray actor, built at its first call from the arguments the
    call carries by reference.

    The actor's constructor takes nothing: a restartable actor built from objects in the
    store cannot be restarted once they are gone (Ray warns of it at every creation). Each
    call carries the one reference to the scorer's arguments, wrapped in a list so that Ray
    passes it as it is; the first call after a start or a restart reads it and builds the
    scorer, later calls reuse it. The driver holds the reference until the actors are
    killed.
    """

    def __init__(self) -> None:
        self._scorer: ShardScorer | None = None

    def call(self, arguments: list[Any], method: str, *args: Any, **kwargs: Any) -> Any:
        if self._scorer is None:
            import ray

            scorer_args, scorer_kwargs = ray.get(arguments[0])
            self._scorer = ShardScorer(*scorer_args, **scorer_kwargs)
        return getattr(self._scorer, method)(*args, **kwargs)


def _ray_pool(
    ctx: JobContext, make_args: tuple[Any, ...], kwargs: dict[str, Any], started_here: bool
) -> _Pool:
    import ray

    cfg = ctx.config.ray
    # Put once: every actor reads the same object, not copies of the arrays (numpy arrays
    # come back zero-copy from the object store).
    arguments_ref = ray.put((make_args, kwargs))
    shared_refs = [arguments_ref]
    actor_cls = ray.remote(_RayShardScorer).options(
        num_cpus=cfg.num_cpus_per_actor,
        # One actor per node while nodes last, so a lost node takes the fewest shards with it.
        scheduling_strategy="SPREAD",
        max_restarts=cfg.max_retries,
        max_task_retries=cfg.max_retries,
    )
    actors = [actor_cls.remote() for _ in range(cfg.num_actors)]

    def map_shards(method: str, calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        # (args, resubmissions so far); a call whose actor became unreachable goes back in.
        queue: list[tuple[tuple[Any, ...], int]] = [(args, 0) for args in calls]
        in_flight: dict[Any, tuple[int, tuple[Any, ...], int]] = {}  # ref -> slot, call
        load = [0] * len(actors)
        while queue or in_flight:
            while queue:
                slot = int(np.argmin(load))
                if load[slot] >= IN_FLIGHT_PER_ACTOR:
                    break
                args, resubmitted = queue.pop(0)
                # A resubmitted shard may have been written by the lost attempt: rewrite it.
                options = {"rewrite": True} if resubmitted and method == "score_shard" else {}
                ref = actors[slot].call.remote([arguments_ref], method, *args, **options)
                in_flight[ref] = (slot, args, resubmitted)
                load[slot] += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                slot, args, resubmitted = in_flight.pop(ref)
                load[slot] -= 1
                try:
                    result = _task_result(ref, resubmittable=resubmitted < cfg.max_retries)
                except _ActorUnreachable:
                    # Its node is gone or the actor restarts (elsewhere): the call goes back
                    # in the queue, for that actor once restarted or for another one.
                    queue.append((args, resubmitted + 1))
                    continue
                yield result

    def close() -> None:
        # The reference must outlive the actors: a restarted actor reads it again.
        del shared_refs[:]
        for actor in actors:
            ray.kill(actor)
        _stop_ray(started_here)

    info = {"executor": "ray", "actors": cfg.num_actors, "started_ray": started_here}
    return _Pool(map_shards, close, info)


class _ActorUnreachable(Exception):
    """The call's actor could not be reached (a lost node); the call may be resubmitted."""


def _task_result(ref: Any, *, resubmittable: bool = False) -> Any:
    """``ray.get(ref)``, with Ray's wrapping of a worker's failure turned into our error.

    ``resubmittable``: an actor that Ray reports temporarily unavailable (its node lost,
    and Ray's own task retry given up) raises ``_ActorUnreachable`` instead, for the caller
    to submit the call again.

    A ``RayTaskError`` prints the worker's coloured traceback as its message; what a person
    needs is the worker's own error: ours as it was raised (its causes kept as texts),
    anything else as a ``WorkerError`` naming its type and message.
    """
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        logger.debug(
            "shard task failed in a Ray worker:\n%s",
            runner.plain_text(str(exc)),
            extra={"action": "match.worker_traceback"},
        )
        if isinstance(cause, errors.JobError):
            raise cause from None
        raise errors.WorkerError(
            f"a shard failed in a Ray worker: {type(cause).__name__}: {cause}"
        ) from None
    except ray.exceptions.RayError as exc:
        if resubmittable and isinstance(exc, ray.exceptions.ActorUnavailableError):
            logger.warning(
                "a shard's actor is unreachable (%s); submitting the shard again",
                type(exc).__name__,
                extra={"action": "match.shard_resubmit"},
            )
            raise _ActorUnreachable() from exc
        message = runner.plain_text(str(exc)).strip().splitlines()
        raise errors.WorkerError(
            f"a Ray worker scoring shards failed: {type(exc).__name__}: "
            f"{message[0] if message else ''}"
        ) from None


def run_nightly(
    ctx: JobContext,
    settings: core.MatchSettings,
    *,
    crash_marker: str | None = None,
    crash_shard: int = 0,
) -> JobResult:
    """Score every active user, shard by shard; see the module docstring."""
    figures = ctx.figures

    def load() -> tuple[Population, int, population_store.FilterSnapshot]:
        read_engine = engine_mod.create_engine(ctx.database_url)
        try:
            with figures.phase("load"), read_engine.connect() as conn:
                # Before any work: a config that scores differently may not write this
                # version (checked again where the version's hash is recorded).
                core.claim_version(
                    conn, settings, ctx.now, replace=ctx.replace_version, record=False
                )
                # Before the load: whatever changes after it is caught at publish time.
                guard = population_store.filter_snapshot(conn)
                return (*core.load_population(conn, ctx, settings), guard)
        finally:
            read_engine.dispose()

    # Ray starts (seconds of process start-up, mostly waiting) while the population loads
    # on one core in a thread of its own.
    started_ray = False
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
            loading = executor.submit(load)
            if ctx.config.ray.enabled:
                with figures.phase("start_ray"):
                    started_ray = _start_ray(ctx.config.ray)
            pop, rows_read, guard = loading.result()
        with figures.phase("index"):
            indexes = core.build_indexes(pop, settings)
            index_bytes = indexes.to_bytes()
        # Shards follow the search order so that a query group's block is built once.
        shards = shard_rows(candidates.search_order(pop, indexes), ctx.config.ray.shard_size)
        write_engine = engine_mod.writer(engine_mod.create_engine(ctx.database_url))
        try:
            return _score_all(
                ctx,
                settings,
                pop,
                rows_read,
                indexes,
                index_bytes,
                shards,
                write_engine,
                crash_marker,
                crash_shard,
                started_ray,
                guard,
            )
        finally:
            write_engine.dispose()
    finally:
        # The pool has stopped the Ray it was given; this covers failures before it existed.
        _stop_ray(started_ray)


def _stop_ray(started_here: bool) -> None:
    if started_here:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _refuse_low_coverage(
    ctx: JobContext,
    pop: Any,
    rows_read: int,
    results: list[dict[str, Any]],
    stage: str | None,
    write_engine: Any,
) -> JobResult | None:
    """Check the share of active users the output gives a list; ``None`` to publish it.

    Below ``audit.min_coverage`` the output is not published — the stage is dropped, the
    old version stays served — unless ``ctx.force_swap``: then it is, with a warning. A
    refused output fails the run (``on_low_coverage: fail``, raises ``LowCoverageError``)
    or ends it with a warning (``warn``: the returned result). Without a stage (SQLite) the
    shards have already replaced their users' lists; only the removal of departed users'
    lists is held back.
    """
    audit = ctx.config.audit
    users = pop.n_users
    without = sum(int(r["funnel"].get("users_without_candidates", 0)) for r in results)
    coverage = (users - without) / users if users else None
    figure: dict[str, Any] = {
        "active_users": users,
        "users_with_list": users - without,
        "coverage": None if coverage is None else round(coverage, 5),
        "min_coverage": audit.min_coverage,
    }
    ctx.figures.counts["coverage"] = figure
    if coverage is None or coverage >= audit.min_coverage:
        return None
    text = (
        f"the match output gives {users - without} of {users} active users a list "
        f"(coverage {coverage:.1%}), below audit.min_coverage {audit.min_coverage:.1%}"
    )
    if ctx.force_swap:
        figure["published"] = "forced"
        ctx.figures.warn(f"{text}; published anyway (--force-swap)", ctx.logger, "match.coverage")
        return None
    figure["published"] = "refused"
    if stage is not None:
        with write_engine.begin() as conn:
            swap.drop_stage(conn, stage)
        kept = "not swapped in: the previous lists are still served"
    else:
        kept = "no swap on this database: the shards already replaced their users' lists"
    message = f"{text}; {kept}; check the inputs, or rerun with --force-swap to publish it"
    if audit.on_low_coverage == "fail":
        ctx.logger.warning("%s", message, extra={"action": "match.coverage"})
        raise errors.LowCoverageError(message)
    ctx.figures.warn(message, ctx.logger, "match.coverage")
    written = sum(int(r["funnel"].get("rows_written", 0)) for r in results)
    return JobResult(
        rows_read=rows_read,
        rows_written=0 if stage is not None else written,
        users=users,
        skipped=dict(ctx.figures.skipped),
    )


def _score_all(
    ctx: JobContext,
    settings: core.MatchSettings,
    pop: Any,
    rows_read: int,
    indexes: Any,
    index_bytes: bytes,
    shards: list[RowArray],
    write_engine: Any,
    crash_marker: str | None,
    crash_shard: int,
    started_ray: bool,
    guard: population_store.FilterSnapshot,
) -> JobResult:
    figures = ctx.figures
    with write_engine.connect() as conn:
        can_swap = swap.supports_swap(conn)
    stage = swap.stage_name(ctx.run_id or 0) if can_swap else None
    replaced: str | None = None
    storage = ctx.config.storage
    if stage is not None:
        with write_engine.begin() as conn:
            # Fenced: a run abandoned while paused must not drop its successor's stage.
            if ctx.run_id is not None:
                ledger.fence(conn, ctx.run_id)
            disk = swap.check_free_disk(
                conn,
                settings.version,
                expected_rows=pop.n_users * settings.scoring.top_k,
                factor=storage.disk_estimate_factor,
                reserve_bytes=storage.disk_reserve_bytes,
                path=storage.disk_path,
            )
            figures.counts["disk_check"] = disk
            if not disk["checked"]:
                ctx.logger.warning(
                    "free disk not checked before staging: %s",
                    disk["reason"],
                    extra={"action": "match.disk_check", **disk},
                )
            swap.create_stage(conn, stage, settings.version)
    else:
        # Each shard publishes its own rows: the version's hash changes with the first.
        with write_engine.begin() as conn:
            replaced = core.claim_version(
                conn, settings, ctx.now, replace=ctx.replace_version, record=True
            )
    args = (pop, index_bytes, settings, ctx.database_url, ctx.now)
    kwargs = {
        "crash_marker": crash_marker,
        "crash_shard": crash_shard,
        "stage": stage,
        "guard": None if stage is not None else guard,
        "run_id": ctx.run_id,
    }
    with figures.phase("start_workers"):
        if ctx.config.ray.enabled:
            pool = _ray_pool(ctx, args, kwargs, started_ray)
        else:
            pool = _in_process_pool(ShardScorer(*args, **kwargs))
    results: list[dict[str, Any]] = []
    exposure: RowArray | None = None
    try:
        if settings.scoring.exposure_cap is not None:
            with figures.phase("exposure_pass"):
                exposure = np.zeros(pop.n_users, dtype=np.int64)
                calls = [(i, rows) for i, rows in enumerate(shards)]
                for counts in pool.map_shards("count_shard", calls):
                    exposure += counts
        with figures.phase("score_and_write"):
            bar = progress.bar(
                total=len(shards), desc="match shards", enabled=ctx.show_progress, unit="shard"
            )
            calls = [(i, rows, exposure) for i, rows in enumerate(shards)]
            # The longest wait between two results (the first one waits for the actors to
            # start): after a lost node, the time until its shards come back from the
            # surviving actors (detection, restart, rescore).
            longest_wait = 0.0
            waited_from: float | None = None
            for result in pool.map_shards("score_shard", calls):
                results.append(result)
                now = time.perf_counter()
                if waited_from is not None:
                    longest_wait = max(longest_wait, now - waited_from)
                waited_from = now
                bar.update(1)
            bar.close()
    except BaseException:
        if stage is not None:
            with write_engine.begin() as conn:
                swap.drop_stage(conn, stage)
        raise
    finally:
        pool.close()
    departed = 0
    purged = publish_guard.Purged()

    def audit_recall() -> dict[str, Any]:
        with figures.phase("recall_audit"):
            return core.recall_audit(pop, indexes, settings, exposure)

    refused = _refuse_low_coverage(ctx, pop, rows_read, results, stage, write_engine)
    if refused is not None:
        return refused
    # The audit is driver CPU, the swap's index builds keep about one core busy on the
    # server: side by side they cost the longer of the two.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        auditing = executor.submit(audit_recall)
        if stage is not None:
            # Users who left are simply not in the stage: the swap removes their rows.
            with figures.phase("swap"), write_engine.begin() as conn:
                # In the swap's transaction: the version's rows and its hash change together.
                replaced = core.claim_version(
                    conn, settings, ctx.now, replace=ctx.replace_version, record=True
                )
                purged = swap.swap_in_stage(
                    conn, stage, settings.version, guard, pop.user_ids, run_id=ctx.run_id
                )
                if storage.keep_versions is not None:
                    retired = swap.drop_retired_versions(
                        conn, storage.keep_versions, settings.version
                    )
                    figures.counts["retired_versions"] = retired
        else:
            with figures.phase("remove_departed"), write_engine.begin() as conn:
                if ctx.run_id is not None:
                    ledger.fence(conn, ctx.run_id)
                departed = scores.delete_users_except(conn, settings.version, pop.user_ids)
        audit = auditing.result()
    with figures.phase("set_states"), write_engine.begin() as conn:
        # Scored now: marks made before this run started are served; users without any
        # candidate are recorded so that the backfill does not score them again for nothing.
        listed = np.asarray(api.users_with_scores(conn, settings.version), dtype=np.int64)
        empty = np.setdiff1d(pop.user_ids, listed)
        set_states.record_scored(
            conn, settings.version, pop.user_ids, empty, ctx.now, marked_before=ctx.now
        )
    recall, floor = audit.get("recall_at_k"), ctx.config.audit.min_recall
    if recall is not None and recall < floor:
        figures.warn(
            f"recall@{audit['k']} audit {recall:.4f} is below audit.min_recall {floor}: the "
            f"lists of {audit['sample_users']} sampled users miss pairs exhaustive scoring "
            "ranks in their top K (candidate generation: FAISS lists past "
            "candidates.exact_below)",
            ctx.logger,
            "match.recall",
        )
    funnel = core.merge_funnels([r["funnel"] for r in results])
    funnel["rows_written"] = funnel.get("rows_written", 0) - purged.rows
    appearances = np.zeros(pop.n_users, dtype=np.int64)
    for r in results:
        np.add.at(appearances, *r["exposure"])
    figures.counts.update(
        funnel=funnel,
        exposure={"over": "all_lists", **scoring.exposure_spread(appearances)},
        recall_audit=audit,
        algorithm_version=settings.version,
        shards={
            "count": len(shards),
            "shard_size": ctx.config.ray.shard_size,
            "actor_restarts": len({r["pid"] for r in results if r["restarted_actor"]}),
            "write_retries": sum(r["write_attempts"] - 1 for r in results),
            "compute_s": round(sum(r["compute_s"] for r in results), 3),
            "write_s": round(sum(r["write_s"] for r in results), 3),
            # Shards per Ray node (hex node id; "in_process" without Ray).
            "nodes": dict(collections.Counter(r["node_id"] or "in_process" for r in results)),
            "longest_wait_s": round(longest_wait, 3),
            **pool.info,
        },
        departed_rows_deleted=departed,
        empty_users=int(empty.size),
        # Rows computed but not published: a change recorded during the run forbids them.
        purged_at_swap=purged.figures(),
        scoring_hash=settings.config_hash,
        **({"replaced_scoring_hash": replaced} if replaced else {}),
        write_mode="stage_and_swap" if stage is not None else "replace_per_shard",
        peak_rss_mb={
            "driver": _peak_rss_mb(),
            "workers": sorted({r["pid"]: r["peak_rss_mb"] for r in results}.values()),
        },
    )
    ctx.logger.info(
        "nightly match: %d users in %d shards, %d rows, recall@%s %s",
        pop.n_users,
        len(shards),
        funnel.get("rows_written", 0),
        audit.get("k"),
        audit.get("recall_at_k") if audit.get("recall_at_k") is not None else audit.get("reason"),
        extra={"action": "match.nightly", "funnel": funnel, "recall": audit.get("recall_at_k")},
    )
    return JobResult(
        rows_read=rows_read,
        rows_written=int(funnel.get("rows_written", 0)),
        users=pop.n_users,
        skipped=dict(figures.skipped),
        extra={"recall_at_k": audit.get("recall_at_k")},
    )
