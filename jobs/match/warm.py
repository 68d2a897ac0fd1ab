"""The event worker's warm population: loaded once, then kept current batch by batch.

A cold users-scope match run loads its targets' whole candidate region from the database,
a fixed cost that dominates an event's latency (seconds at 10k users, ~20 s at 100k). The
long-running worker instead holds :class:`WarmPopulation`: every active user as the loader
reads them (before cleaning), the users rows behind them, and the filter digests each user
had when read. Per match run it

1. reloads everything when it is due (:meth:`WarmPopulation.reload_reason`): never loaded,
   older than ``worker.reload_seconds``, loaded under another scoring hash, or a whole-scope
   run of a job whose tables it holds (a signal job, the match job, the nightly) succeeded
   since the load began;
2. otherwise re-reads only the touched users — the run's scope, the users the worker marked
   (:meth:`touch`: every user and other user of its events, the deactivated ones included),
   active users who joined since, and every user named by an event another worker settled
   since (its jobs rewrote their rows) — with the loader itself, their likes, passes and
   blocks both ways, and their filter digests, and splices them in
   (:func:`compute.warm.replace_users`; a fresh vector of another width than the
   population's is counted ``bad_vector_blob`` and absent, as a whole load would count it);
3. hands the match job the users of the region a cold run would load (cut in memory by
   :meth:`region_ids`, as the database query cuts it; :meth:`region`), with ages, account
   ages and inactivity recomputed at the run's ``now`` (never frozen at load time) and
   cleaned exactly as a cold load is: the same population.

The publish guard stays exact: a user's digest is the one taken before *their* rows were
read, so any change to a user the worker has not re-read since (a change whose event is
still queued, or one no event announced) makes the publish drop every row on either side of
them, and every like, pass or block committed before the publish is purged as on the cold
path. What no event announces and no filter digest covers (``last_active_at`` alone, a signal
rewritten outside the worker's jobs) waits for the next reload.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from compute import warm as warm_compute
from compute.population import Population, clean_population
from jobs.match import core
from jobs.storage import events as event_store
from jobs.storage import ledger
from jobs.storage import population as population_store

logger = logging.getLogger(__name__)

# Whole-scope runs of these jobs rewrite what the held population was read from.
WHOLE_SCOPE_JOBS = ("quiz", "interests", "ratings", "likes", "match", "nightly")


@dataclasses.dataclass(frozen=True, eq=False)
class _Held:
    """What one load gave, kept current by the batches since."""

    pop: Population  # every active user as loaded (not cleaned), rows sorted by id
    users: pd.DataFrame  # the users rows behind ``pop``, aligned by row
    guard: population_store.FilterSnapshot  # each user's digests before their last read
    columns: warm_compute.RegionColumns  # what candidate regions are cut by
    scoring_hash: str
    loaded_at: float  # monotonic clock
    whole_run_at: dt.datetime | None  # latest whole-scope success before the load
    max_user_id: int


@dataclasses.dataclass(frozen=True, eq=False)
class Region:
    """What a match pass gets instead of a cold load."""

    pop: Population  # cleaned, as ``core.load_clean`` would give for the region
    guard: population_store.FilterSnapshot
    skipped: dict[str, int]


class WarmPopulation:
    """The population held by one worker process (not shared across processes).

    ``clock`` (monotonic seconds) only times the reload; tests pass their own.
    """

    def __init__(self, reload_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not reload_seconds > 0:
            raise ValueError(f"reload_seconds must be > 0; got {reload_seconds!r}")
        self.reload_seconds = float(reload_seconds)
        self._clock = clock
        self._held: _Held | None = None
        self._dirty: set[int] = set()
        # Events seen settled: every event up to ``_event_floor`` was, and so were those
        # in ``_settled`` above it. Another worker's settled event names users whose rows
        # its jobs rewrote: this worker re-reads them too.
        self._event_floor = 0
        self._settled: set[int] = set()
        self.loads = 0  # whole loads so far (the first one included)

    @property
    def loaded(self) -> bool:
        return self._held is not None

    @property
    def n_users(self) -> int:
        return 0 if self._held is None else self._held.pop.n_users

    def touch(self, user_ids: Iterable[int]) -> None:
        """Mark users whose rows changed: the next match run re-reads them."""
        self._dirty.update(int(u) for u in user_ids)

    def reload_reason(self, conn: Any, settings: core.MatchSettings) -> str | None:
        """Why the next run must load everything, or ``None`` if what is held will do."""
        held = self._held
        if held is None:
            return "not_loaded"
        if held.scoring_hash != settings.config_hash:
            return "scoring_hash"
        if self._clock() - held.loaded_at >= self.reload_seconds:
            return "reload_seconds"
        latest = ledger.last_whole_success(conn, WHOLE_SCOPE_JOBS)
        if latest is not None and (held.whole_run_at is None or latest > held.whole_run_at):
            return "whole_scope_run"
        return None

    def prepare(
        self,
        conn: Any,
        now: dt.datetime,
        settings: core.MatchSettings,
        scope_ids: core.RowArray,
    ) -> dict[str, Any]:
        """Bring what is held up to date for a run over ``scope_ids``; its figures.

        Reloads when :meth:`reload_reason` says so, else re-reads the touched users. The
        skipped counts of the rows read are in the figures' ``skipped``.
        """
        start = time.perf_counter()
        reason = self.reload_reason(conn, settings)
        touched = np.union1d(
            np.asarray(sorted(self._dirty), dtype=np.int64), np.asarray(scope_ids, np.int64)
        )
        figures: dict[str, Any] = {}
        if reason is None:
            assert self._held is not None
            joined = population_store.active_ids_above(conn, self._held.max_user_id)
            elsewhere = self._newly_settled(conn)
            touched = np.union1d(np.union1d(touched, joined), elsewhere)
            skipped = self._refresh(conn, now, settings, touched)
            figures = {
                "refreshed_users": int(touched.size),
                "joined_users": int(joined.size),
                "settled_event_users": int(elsewhere.size),
            }
        if reason is not None:
            skipped = self._load(conn, now, settings)
            figures = {"reloaded": reason}
            logger.info(
                "warm population loaded (%s): %d users",
                reason,
                self.n_users,
                extra={"action": "match.warm_load", "reason": reason, "users": self.n_users},
            )
        self._dirty.clear()
        return {
            **figures,
            "held_users": self.n_users,
            "prepare_s": round(time.perf_counter() - start, 4),
            "skipped": skipped,
        }

    def _load(self, conn: Any, now: dt.datetime, settings: core.MatchSettings) -> dict[str, int]:
        self._held = None  # let the old population go before the new one is read
        whole_run_at = ledger.last_whole_success(conn, WHOLE_SCOPE_JOBS)
        # Before the load: an event settled after this is seen by the next refresh (those
        # settled already are in what the load reads).
        self._event_floor, self._settled = event_store.settled_floor(conn), set()
        self._newly_settled(conn)
        started = self._clock()
        # Digests first: a change after them is caught at publish (see the module).
        guard = population_store.filter_snapshot(conn)
        loaded = population_store.load(conn, now, settings.load)
        assert loaded.users is not None
        ids = loaded.population.user_ids
        users = _parsed(loaded.users).reset_index(drop=True)
        self._held = _Held(
            pop=loaded.population,
            users=users,
            guard=guard,
            columns=_region_columns(users),
            scoring_hash=settings.config_hash,
            loaded_at=started,
            whole_run_at=whole_run_at,
            max_user_id=int(max(ids.max(initial=0), guard.user_ids.max(initial=0))),
        )
        self.loads += 1
        return loaded.skipped

    def _newly_settled(self, conn: Any) -> core.RowArray:
        """Users named by events settled (by any worker) since the last look, sorted."""
        recent = event_store.events_after(conn, self._event_floor)
        users: set[int] = set()
        settled = set()
        open_ids = []
        for event_id, user, other, status in recent:
            if status not in event_store.TERMINAL_STATUSES:
                open_ids.append(event_id)
                continue
            settled.add(event_id)
            if event_id not in self._settled:
                users.add(user)
                if other is not None:
                    users.add(other)
        if recent:
            # Everything below the oldest open event is settled and seen: move the floor.
            self._event_floor = (open_ids[0] - 1) if open_ids else recent[-1][0]
        self._settled = {i for i in settled if i > self._event_floor}
        return np.asarray(sorted(users), dtype=np.int64)

    def _refresh(
        self,
        conn: Any,
        now: dt.datetime,
        settings: core.MatchSettings,
        touched: core.RowArray,
    ) -> dict[str, int]:
        """Re-read ``touched`` and splice them in; the skipped counts of the rows read."""
        held = self._held
        assert held is not None
        if touched.size == 0:
            return {}
        guard = population_store.filter_snapshot(conn, touched)
        fresh = population_store.load(conn, now, settings.load, touched)
        pairs = population_store.exclusion_pairs(conn, touched)
        fitted, misfits = warm_compute.conform(held.pop, fresh.population)
        assert fresh.users is not None
        pop = warm_compute.replace_users(held.pop, fitted, touched, pairs)
        kept = held.users[~held.users["id"].isin(touched)]
        users = pd.concat([kept, _parsed(fresh.users)], ignore_index=True)
        users = users.sort_values("id", kind="stable").reset_index(drop=True)
        self._held = dataclasses.replace(
            held,
            pop=pop,
            users=users,
            guard=population_store.merge_snapshots(held.guard, guard, touched),
            columns=_region_columns(users),
            max_user_id=max(held.max_user_id, int(touched.max(initial=0))),
        )
        skipped = dict(fresh.skipped)
        skipped["bad_vector_blob"] = skipped.get("bad_vector_blob", 0) + misfits["bad_vector_blob"]
        return skipped

    def region_ids(
        self, target_ids: core.RowArray, settings: core.MatchSettings
    ) -> core.RowArray | None:
        """The users a pass over ``target_ids`` scores against, cut from what is held as
        ``jobs.match.users.region_ids`` cuts them from the database (``None``: everyone)."""
        held = self._held
        if held is None:
            raise RuntimeError("WarmPopulation.region_ids before prepare: nothing is loaded")
        cell = settings.candidates.geo_cell_deg
        if cell is None:
            return None
        region = warm_compute.candidate_region(
            held.columns,
            target_ids,
            settings.load.default_max_distance_km,
            margin_deg=float(cell),
        )
        return region if region.size < settings.candidates.exact_below else None

    def region(
        self,
        region_ids: core.RowArray | None,
        now: dt.datetime,
        settings: core.MatchSettings,
    ) -> Region:
        """The held users of ``region_ids`` (``None``: everyone) as a cold load gives them
        at ``now``: clock-derived fields recomputed, then cleaned."""
        held = self._held
        if held is None:
            raise RuntimeError("WarmPopulation.region before prepare: nothing is loaded")
        if region_ids is None:
            pop, rows = held.pop, np.arange(held.pop.n_users, dtype=np.int64)
        else:
            pop = warm_compute.take_ids(held.pop, region_ids)
            rows = np.searchsorted(held.pop.user_ids, pop.user_ids).astype(np.int64)
        fields = population_store.user_fields(held.users.iloc[rows], now, settings.load)
        pop = dataclasses.replace(pop, **fields)
        cleaned, _, counts = clean_population(
            pop, min_age=settings.min_age, max_age=settings.max_age
        )
        guard = (
            held.guard
            if region_ids is None
            else population_store.subset_snapshot(held.guard, region_ids)
        )
        return Region(pop=cleaned, guard=guard, skipped=counts)


def _region_columns(users: pd.DataFrame) -> warm_compute.RegionColumns:
    def column(name: str) -> np.ndarray:
        return pd.to_numeric(users[name], errors="coerce").to_numpy(np.float64, na_value=np.nan)

    return warm_compute.RegionColumns(
        user_ids=users["id"].to_numpy(dtype=np.int64),
        gender=column("gender"),
        seeking_mask=column("seeking_mask"),
        latitude=column("latitude"),
        longitude=column("longitude"),
        max_distance_km=column("max_distance_km"),
    )


def _parsed(users: pd.DataFrame) -> pd.DataFrame:
    """``users`` with its time columns parsed once, so that recomputing ages, account ages
    and inactivity per batch (``user_fields``, which parses whatever it gets the same way)
    is arithmetic, not parsing."""
    users = users.copy()
    users["birth_date"] = pd.to_datetime(users["birth_date"])
    for name in ("created_at", "last_active_at"):
        users[name] = pd.to_datetime(users[name], utc=True)
    return users
