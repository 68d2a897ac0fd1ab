"""The match score job: signal tables → top-K candidates per user in ``match_scores``.

Scope ``all`` (nightly): load the active population once, build the candidate indexes, cut
the users into shards and score each shard with :class:`jobs.match_ray.ShardScorer` — on a
Ray cluster (``ray.enabled``, the default) or in-process one shard after another — where
each shard's users' lists for ``algorithm_version`` are replaced in one transaction. Users
who left the population then lose their rows, and a recall audit compares a seeded sample's
kept lists with exhaustive scoring of every eligible candidate.

Scope ``users`` (events, ``matchjobs score-user``): in-process, no Ray. The same population
load, the same deterministic indexes (same rng seed) and the same compute code, restricted
to the listed users, plus at most ``fanout.max_reverse`` users whose current list holds one
of them; all replaced in the run's one transaction. A listed user who is inactive or no
longer valid loses their rows. Each user's rows equal what the nightly writes for them.

Pipeline per set of users (:func:`score_rows`): ``compute.candidates.generate_candidates``
(exact blocked ranking by the final score within filter-compatible blocks; FAISS neighbour
lists for oversized blocks; mutual hard filters) → ``compute.scoring.score_pairs``
(six signals, weights, reciprocal fusion, dormancy, exposure cap, top K) →
``compute.reasons`` (up to three reasons, JSON encoded in bulk).

Exposure cap: a candidate's exposure is the number of *uncapped* top-K lists it appears in
over the whole population. The nightly computes it exactly in two passes (counts per shard,
summed by the driver, then the scoring pass). A users-scope run cannot afford the first pass
and uses the stored lists of the version instead (an approximation, corrected nightly).

Writes only ``match_scores``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from compute import candidates, filters, reasons, scoring, signals
from compute.population import Population, clean_population
from jobs.config import Config
from jobs.context import JobContext, JobResult, Scope
from jobs.storage import population as population_store
from jobs.storage import scores

RowArray = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class MatchSettings:
    """Every parameter of the match computation, derived from config in one place."""

    version: str
    config_hash: str
    load: population_store.LoadParams
    candidates: candidates.CandidateParams
    filters: filters.FilterParams
    scoring: scoring.ScoreParams
    reasons: reasons.ReasonParams
    index_seed: int
    min_age: float
    max_age: float
    audit_sample_users: int
    audit_seed: int
    max_reverse: int


def settings_from_config(config: Config) -> MatchSettings:
    """The only mapping from YAML settings to compute parameters."""
    cand = config.candidates
    sc = config.scoring
    return MatchSettings(
        version=config.algorithm_version,
        config_hash=config.content_hash,
        load=population_store.LoadParams(
            default_max_distance_km=float(config.filters.default_max_distance_km),
            prior_weight=float(config.ratings.prior_weight),
            min_ratings_for_preference=config.ratings.min_ratings_for_preference,
        ),
        candidates=candidates.CandidateParams(
            k_quiz=cand.quiz_k,
            k_interest=cand.interest_k,
            k_fallback=cand.fallback_k,
            exact_below=cand.exact_below,
            nlist_factor=float(cand.nlist_factor),
            nprobe=cand.nprobe,
            train_points_per_list=cand.train_points_per_list,
            margin=cand.margin,
            growth=cand.growth,
            age_band_years=cand.age_band_years,
            geo_cell_deg=None if cand.geo_cell_deg is None else float(cand.geo_cell_deg),
        ),
        filters=filters.FilterParams(),
        scoring=scoring.ScoreParams(
            weights=scoring.SignalWeights(**config.weights.by_signal()),
            signal_params=signals.SignalParams(
                newness_half_life_days=float(config.signals.newness_half_life_days),
                proximity_scale_km=float(config.signals.proximity_scale_km),
            ),
            neutral=float(config.signals.neutral_value),
            top_k=sc.top_k,
            reciprocal=sc.reciprocal.enabled,
            fusion=sc.reciprocal.combine,
            dormancy=sc.dormancy.enabled,
            dormancy_grace_days=float(sc.dormancy.grace_days),
            dormancy_half_life_days=float(sc.dormancy.half_life_days),
            exposure_cap=sc.exposure_cap.max_lists if sc.exposure_cap.enabled else None,
            exposure_factor=float(sc.exposure_cap.penalty),
        ),
        reasons=reasons.ReasonParams(),
        index_seed=cand.seed,
        min_age=float(config.filters.min_age),
        max_age=float(config.filters.max_age),
        audit_sample_users=config.audit.sample_users,
        audit_seed=config.audit.seed,
        max_reverse=config.fanout.max_reverse,
    )


def build_indexes(pop: Population, settings: MatchSettings) -> candidates.CandidateIndexes:
    """Candidate indexes; deterministic (fixed seed), so every run builds the same ones."""
    return candidates.build_indexes(
        pop, settings.candidates, np.random.default_rng(settings.index_seed)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ShardOutput:
    """Rows to write for some users, and the funnel figures of computing them."""

    user_ids: RowArray
    frame: pd.DataFrame
    scored: scoring.ScoredPairs
    funnel: dict[str, Any]


def _no_exposure(settings: MatchSettings) -> scoring.ScoreParams:
    return dataclasses.replace(settings.scoring, exposure_cap=None)


def uncapped_counts(
    pop: Population,
    indexes: candidates.CandidateIndexes,
    rows: RowArray,
    settings: MatchSettings,
) -> RowArray:
    """(n,) int64: appearances of each row in the uncapped top-K lists of ``rows``."""
    params = _no_exposure(settings)
    pool = candidates.generate_candidates(
        pop, indexes, rows, settings.candidates, settings.filters, params
    )
    scored = scoring.score_pairs(pop, pool.user_rows, pool.cand_rows, params)
    return scoring.exposure_counts(scored, pop.n_users)


def score_rows(
    pop: Population,
    indexes: candidates.CandidateIndexes,
    rows: RowArray,
    settings: MatchSettings,
    exposure_counts: RowArray | None = None,
) -> ShardOutput:
    """Candidates, scores, top K and reasons for the users at ``rows`` of ``pop``."""
    timings: dict[str, float] = {}
    params = settings.scoring
    if params.exposure_cap is not None and exposure_counts is None:
        raise ValueError("exposure_counts are required when the exposure cap is on")
    if params.exposure_cap is None:
        exposure_counts = None
    start = time.perf_counter()
    pool = candidates.generate_candidates(
        pop,
        indexes,
        rows,
        settings.candidates,
        settings.filters,
        params,
        exposure_counts=exposure_counts,
    )
    timings["candidates"] = time.perf_counter() - start
    start = time.perf_counter()
    scored = scoring.score_pairs(
        pop, pool.user_rows, pool.cand_rows, params, exposure_counts=exposure_counts
    )
    timings["score"] = time.perf_counter() - start
    start = time.perf_counter()
    slots = reasons.select_reasons(pop, scored, settings.reasons)
    texts = reasons.encode_reasons_json(pop, scored, slots)
    columns: dict[str, Any] = {
        "user_id": pop.user_ids[scored.user_rows],
        "candidate_id": pop.user_ids[scored.cand_rows],
        "score": scored.score.astype(np.float64),
    }
    for i, name in enumerate(scores.SUBSCORE_COLUMNS):
        columns[name] = scored.subscores[:, i].astype(np.float64)
    columns["reasons"] = texts
    frame = pd.DataFrame(columns)
    timings["reasons"] = time.perf_counter() - start
    funnel = {
        "users": int(rows.size),
        "candidates_per_source": dict(pool.source_counts),
        "removed_per_filter": dict(pool.filter_removed),
        "scored": int(pool.user_rows.size),
        "kept": len(scored),
        "users_without_candidates": int(rows.size - np.unique(scored.user_rows).size),
        "compute_s": {k: round(v, 4) for k, v in timings.items()},
    }
    return ShardOutput(pop.user_ids[rows], frame, scored, funnel)


def merge_funnels(funnels: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum shard funnels key by key (nested dicts included)."""
    total: dict[str, Any] = {}
    for funnel in funnels:
        for key, value in funnel.items():
            if isinstance(value, dict):
                inner = total.setdefault(key, {})
                for k, v in value.items():
                    inner[k] = inner.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    if "compute_s" in total:
        total["compute_s"] = {k: round(v, 3) for k, v in total["compute_s"].items()}
    return total


# ------------------------------------------------------------------------------ audit


def exhaustive_top_k(
    pop: Population,
    rows: RowArray,
    settings: MatchSettings,
    exposure_counts: RowArray | None = None,
    chunk_pairs: int = 2_000_000,
) -> RowArray:
    """(q, K) candidate rows (-1 pad): top K over *every* filter-passing candidate."""
    k = settings.scoring.top_k
    table = np.full((rows.size, k), -1, dtype=np.int64)
    everyone = np.arange(pop.n_users, dtype=np.int64)
    per_chunk = max(1, chunk_pairs // max(pop.n_users, 1))
    params = settings.scoring
    counts = exposure_counts if params.exposure_cap is not None else None
    for start in range(0, rows.size, per_chunk):
        chunk = rows[start : start + per_chunk]
        users = np.repeat(chunk, everyone.size)
        cands = np.tile(everyone, chunk.size)
        keep, _ = filters.mutual_filter(pop, users, cands, settings.filters)
        scored = scoring.score_pairs(pop, users[keep], cands[keep], params, exposure_counts=counts)
        slot = np.searchsorted(rows, scored.user_rows)
        table[slot, scored.rank] = scored.cand_rows
    return table


def kept_table(scored: scoring.ScoredPairs, rows: RowArray, k: int) -> RowArray:
    """(q, K) kept candidate rows of sorted ``rows`` by rank (-1 pad)."""
    table = np.full((rows.size, k), -1, dtype=np.int64)
    slot = np.searchsorted(rows, scored.user_rows)
    table[slot, scored.rank] = scored.cand_rows
    return table


def recall_audit(
    pop: Population,
    indexes: candidates.CandidateIndexes,
    settings: MatchSettings,
    exposure_counts: RowArray | None = None,
) -> dict[str, Any]:
    """recall@K of the kept lists of a seeded user sample against exhaustive scoring."""
    n_sample = min(settings.audit_sample_users, pop.n_users)
    if n_sample == 0:
        return {"sample_users": 0, "recall_at_k": None}
    rng = np.random.default_rng(settings.audit_seed)
    rows = np.sort(rng.choice(pop.n_users, size=n_sample, replace=False)).astype(np.int64)
    start = time.perf_counter()
    kept = score_rows(pop, indexes, rows, settings, exposure_counts).scored
    pipeline_s = time.perf_counter() - start
    start = time.perf_counter()
    exact = exhaustive_top_k(pop, rows, settings, exposure_counts)
    exact_s = time.perf_counter() - start
    k = settings.scoring.top_k
    return {
        "sample_users": int(n_sample),
        "k": k,
        "recall_at_k": round(candidates.recall_at_k(kept_table(kept, rows, k), exact), 5),
        "pipeline_s": round(pipeline_s, 3),
        "exhaustive_s": round(exact_s, 3),
    }


# ------------------------------------------------------------------------------ the job


def load_clean(
    conn: Any, now: dt.datetime, settings: MatchSettings, user_ids: RowArray | None = None
) -> tuple[Population, dict[str, int], int]:
    """The population as the match job sees it: loaded (all or ``user_ids``) and cleaned.

    Returns the population, the skipped counts by reason and the rows read. Every reader of
    the population (this job, ``explain``, ``evaluate``) goes through here.
    """
    loaded = population_store.load(conn, now, settings.load, user_ids)
    pop, _, counts = clean_population(
        loaded.population, min_age=settings.min_age, max_age=settings.max_age
    )
    return pop, {**loaded.skipped, **counts}, loaded.rows_read


def load_population(
    conn: Any,
    ctx: JobContext,
    settings: MatchSettings,
    user_ids: RowArray | None = None,
) -> tuple[Population, int]:
    """Load and clean the active population (or ``user_ids`` of it); count skipped rows."""
    pop, skipped, rows_read = load_clean(conn, ctx.now, settings, user_ids)
    ctx.figures.skip(skipped, ctx.logger, "match.skip")
    return pop, rows_read


def run(ctx: JobContext, scope: Scope) -> JobResult:
    """Score candidates for the users in ``scope``; replace their ``match_scores`` rows."""
    settings = settings_from_config(ctx.config)
    if scope.is_all:
        # Imported here so that the single-user path never imports Ray.
        from jobs import match_ray

        return match_ray.run_nightly(ctx, settings)
    return _run_users(ctx, scope, settings)


def region_ids(conn: Any, target_ids: RowArray, settings: MatchSettings) -> RowArray | None:
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


def _run_users(ctx: JobContext, scope: Scope, settings: MatchSettings) -> JobResult:
    figures = ctx.figures
    conn = ctx.session.connection()
    scope_ids = scope.ids_array()
    if scope_ids is None:
        raise ValueError("_run_users needs a users scope")
    with figures.phase("reverse_lookup"):
        reverse_ids = scores.users_listing(
            conn, settings.version, scope_ids, exclude=scope_ids, limit=settings.max_reverse
        )
    target_ids = np.union1d(scope_ids, reverse_ids)
    with figures.phase("load"):
        region = region_ids(conn, target_ids, settings)
        # Before the load: whatever changes after it is caught when the rows are published.
        guard = population_store.filter_snapshot(conn, region)
        pop, rows_read = load_population(conn, ctx, settings, region)
    with figures.phase("index"):
        indexes = build_indexes(pop, settings)
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
        output = score_rows(pop, indexes, rows, settings, exposure)
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
