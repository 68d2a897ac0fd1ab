"""The match job for some users (events, ``matchjobs score-user``): in-process, no Ray.

Loads only the targets' candidate region, scores the targets and at most
``fanout.max_reverse`` users whose current list holds one of them, and replaces all their
sets in the run's one transaction, behind the publish guard. A listed user who is inactive
or no longer valid loses their rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.context import JobContext, JobResult, Scope
from jobs.match import core
from jobs.storage import population as population_store
from jobs.storage import scores


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


def run_users(ctx: JobContext, scope: Scope, settings: core.MatchSettings) -> JobResult:
    """Score the users in ``scope`` (and a bounded reverse fan-out); replace their sets."""
    figures = ctx.figures
    conn = ctx.session.connection()
    scope_ids = scope.ids_array()
    if scope_ids is None:
        raise ValueError("run_users needs a users scope")
    # Before any work: a config that scores differently may not write this version.
    core.claim_version(conn, settings, ctx.now, replace=False, record=True)
    with figures.phase("reverse_lookup"):
        reverse_ids = scores.users_listing(
            conn, settings.version, scope_ids, exclude=scope_ids, limit=settings.max_reverse
        )
    target_ids = np.union1d(scope_ids, reverse_ids)
    with figures.phase("load"):
        region = region_ids(conn, target_ids, settings)
        # Before the load: whatever changes after it is caught when the rows are published.
        guard = population_store.filter_snapshot(conn, region)
        pop, rows_read = core.load_population(conn, ctx, settings, region)
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
            config_hash=settings.config_hash,
            computed_at=ctx.now,
            guard=guard,
        )
    funnel = {**output.funnel, "rows_written": written, "rows_deleted": deleted}
    figures.counts.update(
        funnel=funnel,
        loaded_users=pop.n_users,
        loaded="region" if region is not None else "all",
        reverse_users=int(reverse_ids.size),
        missing_users=int(target_ids.size - rows.size),
        algorithm_version=settings.version,
    )
    ctx.logger.info(
        "match scores for %d users (%d reverse): %d rows",
        rows.size,
        reverse_ids.size,
        written,
        extra={"action": "match.write", "rows": written, "reverse": int(reverse_ids.size)},
    )
    return JobResult(
        rows_read=rows_read,
        rows_written=written,
        users=int(rows.size),
        skipped=dict(figures.skipped),
        extra={"reverse_user_ids": [int(u) for u in reverse_ids]},
    )
