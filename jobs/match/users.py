"""The match job for some users (events, ``matchjobs score-user``): in-process, no Ray.

Loads only the targets' candidate region, scores them and replaces their sets in the run's
one transaction, behind the publish guard. A listed user who is inactive or no longer valid
loses their rows.

Reverse fan-out, at most ``fanout.max_reverse`` users per run however many users the scope
holds (the cap holds under any storm):

1. users whose current list holds a scope user (those who rank one highest first) are
   rescored with the scope;
2. with what budget is left, users for whom a scope user is now an eligible candidate
   (both ways through every hard filter) that would enter their list — it is shorter
   than ``top_k``, or its lowest score is below the pair's — are rescored in a second
   pass over their own region;
3. everyone past the cap is marked ``stale`` in ``match_set_states`` (the nightly backfill
   takes them first), and those of them whose list holds a scope user who now fails a
   filter with them lose that row at once: the cap delays a better list, never a
   forbidden pair's removal.

Scored users with no candidate at all are recorded ``empty`` (the backfill skips them until
their inputs change); the others' marks are cleared.

``fanout`` chooses what one run does:

- ``inline``: all of the above in one transaction (``matchjobs score-user``, the backfill);
- ``own``: the scope's own lists only, and every user whose list holds a scope user who now
  fails a filter with them loses that row at once and is marked ``stale`` (returned as
  ``unlisted_user_ids``, for a refill) — the event worker, so that the changed user's new
  list commits without waiting for anyone else's, and no forbidden pair is served until the
  fan-out follows;
- ``reverse``: steps 1–3 for the scope, whose own lists are not rescored (the worker's
  follow-up run, right after ``own``);
- ``none``: the scope's lists only, no reverse lookup (a refill: its users' own data did not
  change, so nobody else's list needs them rescored).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from compute import filters, scoring
from compute.population import Population
from jobs.context import JobContext, JobResult, Scope
from jobs.match import core
from jobs.storage import immediate, scores, set_states
from jobs.storage import population as population_store

if TYPE_CHECKING:
    from jobs.match.warm import WarmPopulation

# How many listing users the reverse lookup reads: those past the cap are marked stale.
REVERSE_LOOKUP_LIMIT = 100_000
Fanout = Literal["inline", "own", "reverse", "none"]
FANOUTS: tuple[Fanout, ...] = ("inline", "own", "reverse", "none")


def region_ids(
    conn: Any, target_ids: core.RowArray, settings: core.MatchSettings
) -> core.RowArray | None:
    """The users a users-scope run must load, or ``None`` for the whole population.

    Every candidate of a target scored by exact blocked ranking lies in its candidate region
    (widened by the geo cell size, so the target searches the very same partitions), hence
    scoring it over the region equals scoring it over everyone — that is what lets an event
    load a few thousand users instead of all of them. A target that reaches ``exact_below``
    candidates or more is ranked from FAISS lists, which depend on the whole population, so
    then, or without geo cells, the whole population is loaded.
    """
    cell = settings.candidates.geo_cell_deg
    if cell is None:
        return None
    region = population_store.candidate_region(
        conn, target_ids, settings.load.default_max_distance_km, margin_deg=float(cell)
    )
    return region if region.size < settings.candidates.exact_below else None


@dataclasses.dataclass(frozen=True, eq=False)
class _Pass:
    """One load → score → replace over some targets."""

    pop: Population
    scored_ids: core.RowArray  # targets found in the population (scored)
    empty_ids: core.RowArray  # of those, the ones left without any row
    funnel: dict[str, Any]
    exposure: core.RowArray  # per row of ``pop``: lists written here that it appears in
    rows_read: int
    deleted: int
    written: int
    whole: bool


def _score_and_replace(
    ctx: JobContext,
    conn: Any,
    settings: core.MatchSettings,
    target_ids: core.RowArray,
    warm: WarmPopulation | None = None,
    region_of: core.RowArray | None = None,
) -> _Pass:
    """Load the candidate region of ``region_of`` (default: the targets), score the targets
    and replace their sets."""
    figures = ctx.figures
    region_of = target_ids if region_of is None else region_of
    with figures.phase("load"):
        if warm is None:
            region = region_ids(conn, region_of, settings)
            # Before the load: whatever changes after it is caught when the rows are published.
            guard = population_store.filter_snapshot(conn, region)
            pop, rows_read = core.load_population(conn, ctx, settings, region)
        else:
            # The held population, already brought up to date by run_users; its digests are
            # each user's before their last read, so the guard is as exact as a cold one.
            region = warm.region_ids(region_of, settings)
            held = warm.region(region, ctx.now, settings)
            guard, pop, rows_read = held.guard, held.pop, 0
            ctx.figures.skip(held.skipped, ctx.logger, "match.skip")
    with figures.phase("index"):
        indexes = core.build_indexes(pop, settings)
    rows_of = pd.Index(pop.user_ids)
    positions = rows_of.get_indexer(target_ids)
    rows = np.sort(positions[positions >= 0]).astype(np.int64)
    exposure = None
    if settings.scoring.exposure_cap is not None:
        stored = scores.candidate_counts(conn, settings.version)
        exposure = np.zeros(pop.n_users, dtype=np.int64)
        where = rows_of.get_indexer(stored["candidate_id"].to_numpy(dtype=np.int64))
        exposure[where[where >= 0]] = stored["n"].to_numpy(dtype=np.int64)[where >= 0]
    with figures.phase("compute"):
        output = core.score_rows(pop, indexes, rows, settings, exposure)
    with figures.phase("write"):
        deleted, written = scores.replace_user_sets(
            conn,
            target_ids,
            output.frame,
            version=settings.version,
            computed_at=ctx.now,
            guard=guard,
        )
    scored_ids = pop.user_ids[rows]
    with_rows = np.unique(output.frame["user_id"].to_numpy(dtype=np.int64))
    return _Pass(
        pop=pop,
        scored_ids=scored_ids,
        empty_ids=np.setdiff1d(scored_ids, with_rows),
        funnel=output.funnel,
        exposure=scoring.exposure_counts(output.scored, pop.n_users),
        rows_read=rows_read,
        deleted=deleted,
        written=written,
        whole=region is None,
    )


def _exposure(passes: list[_Pass]) -> core.RowArray:
    """Appearances in the lists the passes wrote, per user loaded by any pass."""
    user_ids = np.unique(np.concatenate([p.pop.user_ids for p in passes]))
    counts = np.zeros(user_ids.size, dtype=np.int64)
    for p in passes:
        np.add.at(counts, np.searchsorted(user_ids, p.pop.user_ids), p.exposure)
    return counts


def _eligible_listers(
    pop: Population,
    scope_ids: core.RowArray,
    settings: core.MatchSettings,
    among: core.RowArray | None = None,
) -> tuple[core.RowArray, core.RowArray, np.ndarray]:
    """Every (user, scope user) pair of ``pop`` that passes the hard filters both ways, with
    the score the user would give the scope user: ``(user_ids, scope_user_ids, scores)``.
    ``among``: only these users (those of them in ``pop``) instead of everyone."""
    rows_of = pd.Index(pop.user_ids)
    scope_rows = rows_of.get_indexer(scope_ids)
    scope_rows = scope_rows[scope_rows >= 0].astype(np.int64)
    everyone = np.arange(pop.n_users, dtype=np.int64)
    if among is not None:
        found = rows_of.get_indexer(among)
        everyone = np.sort(found[found >= 0]).astype(np.int64)
    users = np.repeat(everyone, scope_rows.size)
    cands = np.tile(scope_rows, everyone.size)
    keep, _ = filters.mutual_filter(pop, users, cands, settings.filters)
    params = dataclasses.replace(settings.scoring, exposure_cap=None)
    scored = scoring.score_pairs(pop, users[keep], cands[keep], params)
    return (
        pop.user_ids[scored.user_rows],
        pop.user_ids[scored.cand_rows],
        np.asarray(scored.score, dtype=np.float64),
    )


def _newly_affected(
    conn: Any,
    settings: core.MatchSettings,
    eligible: tuple[core.RowArray, core.RowArray, np.ndarray],
    skip: core.RowArray,
) -> core.RowArray:
    """Users (not in ``skip``) for whom an eligible scope user would enter their list, the
    best pair first."""
    users, cands, pair_scores = eligible
    outside = ~np.isin(users, skip)
    users, cands, pair_scores = users[outside], cands[outside], pair_scores[outside]
    if users.size == 0:
        return np.empty(0, dtype=np.int64)
    listed = set(scores.listed_pairs(conn, settings.version, users, cands))
    floors = scores.list_floors(conn, settings.version, users)
    top_k = settings.scoring.top_k
    best: dict[int, float] = {}
    for u, c, s in zip(users.tolist(), cands.tolist(), pair_scores.tolist(), strict=True):
        if (u, c) in listed:
            continue
        n, low = floors.get(u, (0, 0.0))
        if n < top_k or s > low:
            best[u] = max(best.get(u, -1.0), s)
    order = sorted(best, key=lambda u: (-best[u], u))
    return np.asarray(order, dtype=np.int64)


def run_users(
    ctx: JobContext,
    scope: Scope,
    settings: core.MatchSettings,
    warm: WarmPopulation | None = None,
    fanout: Fanout = "inline",
) -> JobResult:
    """Score the users in ``scope`` (and a bounded reverse fan-out); replace their sets.

    With ``warm`` (the event worker), the population comes from what it holds, brought up
    to date first (:mod:`jobs.match.warm`), instead of a load of each pass's region.
    ``fanout``: when the reverse fan-out is scored (see the module's docstring).
    """
    figures = ctx.figures
    conn = ctx.session.connection()
    scope_ids = scope.ids_array()
    if scope_ids is None:
        raise ValueError("run_users needs a users scope")
    if fanout not in FANOUTS:
        raise ValueError(f"fanout must be one of {FANOUTS}; got {fanout!r}")
    # Before any work: a config that scores differently may not write this version.
    core.claim_version(conn, settings, ctx.now, replace=False, record=True)
    warm_figures: dict[str, Any] | None = None
    if warm is not None:
        with figures.phase("warm"):
            warm_figures = warm.prepare(conn, ctx.now, settings, scope_ids)
        figures.skip(warm_figures.pop("skipped"), ctx.logger, "match.skip")
    fans_out = fanout in ("inline", "reverse")
    cap = settings.max_reverse if fans_out else 0
    listers = np.empty(0, dtype=np.int64)
    if fanout != "none":
        with figures.phase("reverse_lookup"):
            listers = scores.users_listing(
                conn, settings.version, scope_ids, exclude=scope_ids, limit=REVERSE_LOOKUP_LIMIT
            )
    reverse_ids = listers[:cap]
    past_cap = listers[cap:] if fans_out else listers[:0]
    # Scored in the first pass: the scope's own lists unless ``reverse``, and the listers up
    # to the cap when the fan-out is scored. Its population covers the scope's region, where
    # every user the scope can be eligible with lives.
    target_ids = {
        "inline": np.union1d(scope_ids, reverse_ids),
        "own": scope_ids,
        "reverse": reverse_ids,
        "none": scope_ids,
    }[fanout]
    first = _score_and_replace(
        ctx, conn, settings, target_ids, warm, region_of=np.union1d(scope_ids, target_ids)
    )
    passes = [first]
    newly_ids = newly_past = unlisted = np.empty(0, dtype=np.int64)
    removed = 0
    if fanout != "none":
        with figures.phase("reverse_lookup"):
            # ``own`` checks only those who list the scope; the fan-out looks at everyone.
            among = listers if fanout == "own" else None
            eligible = _eligible_listers(first.pop, scope_ids, settings, among=among)
            if fans_out:
                skip = np.union1d(np.union1d(scope_ids, target_ids), listers)
                newly = _newly_affected(conn, settings, eligible, skip)
                budget = max(cap - int(reverse_ids.size), 0)
                newly_ids, newly_past = newly[:budget], newly[budget:]
        if newly_ids.size:
            passes.append(_score_and_replace(ctx, conn, settings, np.sort(newly_ids), warm))
        # Listers not rescored here: a pair that now fails a filter leaves at once, the rest
        # waits (``own``: for the follow-up; past the cap: for the nightly).
        unscored = past_cap if fans_out else listers
        eligible_pairs = set(zip(eligible[0].tolist(), eligible[1].tolist(), strict=True))
        held = scores.listed_pairs(conn, settings.version, unscored, scope_ids)
        forbidden = [pair for pair in held if pair not in eligible_pairs]
        # A lister outside the loaded region is no candidate of the scope user (the region
        # holds every eligible one): not in ``eligible_pairs``, so forbidden too.
        removed = immediate.delete_pairs(conn, forbidden, version=settings.version, both_ways=False)
        if fanout == "own":
            # The follow-up no longer finds them listing the scope: their lists lost a row.
            unlisted = np.unique(np.asarray([u for u, _ in forbidden], dtype=np.int64))
    stale_ids = np.union1d(np.union1d(past_cap, newly_past), unlisted)
    scored_ids = np.unique(np.concatenate([p.scored_ids for p in passes]))
    empty_ids = np.unique(np.concatenate([p.empty_ids for p in passes]))
    with figures.phase("write"):
        set_states.record_scored(conn, settings.version, target_ids, empty_ids, ctx.now)
        if newly_ids.size:
            set_states.record_scored(conn, settings.version, newly_ids, empty_ids, ctx.now)
        set_states.mark_stale(conn, settings.version, stale_ids, "fanout_cap", ctx.now)
    written = sum(p.written for p in passes)
    deleted = sum(p.deleted for p in passes)
    funnel = {
        **core.merge_funnels([p.funnel for p in passes]),
        "rows_written": written,
        "rows_deleted": deleted,
    }
    figures.counts.update(
        funnel=funnel,
        # Over the lists this run wrote only (the version's other lists are not read).
        exposure={"over": "written_lists", **scoring.exposure_spread(_exposure(passes))},
        loaded_users=sum(p.pop.n_users for p in passes),
        loaded="all" if any(p.whole for p in passes) else "region",
        warm=warm_figures,
        reverse_users=int(reverse_ids.size + newly_ids.size),
        reverse={
            "fanout": fanout,
            "listing": int(reverse_ids.size),
            "newly_eligible": int(newly_ids.size),
            "marked_stale": int(stale_ids.size),
            "unlisted": int(unlisted.size),
            "forbidden_rows_removed": removed,
        },
        empty_users=int(empty_ids.size),
        missing_users=int(target_ids.size - first.scored_ids.size),
        algorithm_version=settings.version,
    )
    ctx.logger.info(
        "match scores for %d users (%d reverse, %d newly eligible, %d marked stale): %d rows",
        scored_ids.size,
        reverse_ids.size,
        newly_ids.size,
        stale_ids.size,
        written,
        extra={"action": "match.write", "rows": written, "reverse": int(reverse_ids.size)},
    )
    return JobResult(
        rows_read=sum(p.rows_read for p in passes),
        rows_written=written,
        users=int(scored_ids.size),
        skipped=dict(figures.skipped),
        extra={
            "reverse_user_ids": [int(u) for u in reverse_ids],
            "newly_eligible_user_ids": [int(u) for u in newly_ids],
            "unlisted_user_ids": [int(u) for u in unlisted],
        },
    )
