"""What both match paths share: settings, the population load, indexes, scoring a set of
users (candidates → signals → top K → reasons), funnels and the recall audit.

Pipeline per set of users (:func:`score_rows`): ``compute.candidates.generate_candidates``
(exact blocked ranking by the final score within filter-compatible blocks; FAISS neighbour
lists for oversized blocks; mutual hard filters) → ``compute.scoring.score_pairs``
(six signals, weights, reciprocal fusion, dormancy, exposure cap, top K) →
``compute.reasons`` (up to three reasons, JSON encoded in bulk).

Exposure cap: a candidate's exposure is the number of *uncapped* top-K lists it appears in
over the whole population. The nightly computes it exactly in two passes (counts per shard,
summed by the driver, then the scoring pass). A users-scope run cannot afford the first pass
and uses the stored lists of the version instead (an approximation, corrected nightly).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from compute import candidates, filters, reasons, scoring, signals, spread
from compute.population import Population, clean_population
from jobs import errors
from jobs.config import Config, Retry
from jobs.context import JobContext
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
    write_retry: Retry = dataclasses.field(default_factory=Retry)


# MatchSettings fields that change how a run works, not the rows it writes.
OPERATIONAL_SETTINGS = frozenset(
    {"version", "config_hash", "audit_sample_users", "audit_seed", "max_reverse", "write_retry"}
)


# Settings added after versions were first hashed, left out of the hash while unset (empty),
# so that a config which does not use them keeps the hash its versions were written with.
ADDED_SETTINGS = (("load", "rating_dimension_weights"),)


def scoring_hash(settings: MatchSettings) -> str:
    """16 hex digits of the SHA-256 over every setting that changes a score row.

    The weights, signal transforms, filters, candidate generation, scoring switches and
    reasons — derived from :class:`MatchSettings`, the one mapping from YAML to compute, so
    a new parameter is covered the moment the computation uses it. Operational sections
    (Ray, the worker, fan-out, runner, audit, retries) are left out: a worker started with
    another ``fanout.max_reverse`` writes the same rows under the same hash.
    """
    fields = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in OPERATIONAL_SETTINGS
    }
    hashed = {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in fields.items()
    }
    for section, name in ADDED_SETTINGS:
        if not hashed[section][name]:
            del hashed[section][name]
    canonical = json.dumps(
        hashed,
        sort_keys=True,
        separators=(",", ":"),
        default=repr,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def claim_version(
    conn: Any, settings: MatchSettings, now: dt.datetime, *, replace: bool, record: bool
) -> str | None:
    """Check that ``settings`` may write its version; the hash it replaces, if any.

    A version's rows all carry one scoring hash: a config whose hash differs is refused
    (:class:`~jobs.errors.VersionConflictError`, naming both) before anything is written,
    unless ``replace``. ``record`` writes the hash to ``algorithm_versions`` now (the
    caller's transaction); a nightly that stages its rows records it in its swap instead.
    """
    # No row lock: holding the version's row would serialize every event writer of the
    # version; record_version's upsert is safe without it, and rows an event writes under
    # the old hash while a replacing nightly runs go with the partition that swap drops.
    stored = scores.stored_scoring_hash(conn, settings.version)
    if stored is not None and stored != settings.config_hash and not replace:
        raise errors.VersionConflictError(
            f"algorithm version {settings.version!r} holds rows scored with config hash "
            f"{stored}; this config's scoring hash is {settings.config_hash}. Give the config "
            f"a new algorithm_version, or rewrite {settings.version!r} with "
            "`matchjobs run nightly --replace-version`"
        )
    if record and stored != settings.config_hash:
        scores.record_version(conn, settings.version, settings.config_hash, now)
    return stored if stored != settings.config_hash else None


def settings_from_config(config: Config) -> MatchSettings:
    """The only mapping from YAML settings to compute parameters."""
    cand = config.candidates
    sc = config.scoring
    settings = MatchSettings(
        version=config.algorithm_version,
        config_hash="",  # below: the scoring hash of everything else
        load=population_store.LoadParams(
            default_max_distance_km=float(config.filters.default_max_distance_km),
            rating_dimension_weights=tuple(sorted(config.ratings.dimension_weights.items())),
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
            spread_seed=spread.spread_seed(config.algorithm_version),
            calibration=(
                None
                if sc.reciprocal.calibration is None
                else scoring.Calibration(**sc.reciprocal.calibration.model_dump())
            ),
        ),
        reasons=reasons.ReasonParams(),
        index_seed=cand.seed,
        min_age=float(config.filters.min_age),
        max_age=float(config.filters.max_age),
        audit_sample_users=config.audit.sample_users,
        audit_seed=config.audit.seed,
        max_reverse=config.fanout.max_reverse,
        write_retry=config.retry,
    )
    return dataclasses.replace(settings, config_hash=scoring_hash(settings))


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
        return {"sample_users": 0, "recall_at_k": None, "reason": "no sample: no users"}
    rng = np.random.default_rng(settings.audit_seed)
    rows = np.sort(rng.choice(pop.n_users, size=n_sample, replace=False)).astype(np.int64)
    start = time.perf_counter()
    kept = score_rows(pop, indexes, rows, settings, exposure_counts).scored
    pipeline_s = time.perf_counter() - start
    start = time.perf_counter()
    exact = exhaustive_top_k(pop, rows, settings, exposure_counts)
    exact_s = time.perf_counter() - start
    k = settings.scoring.top_k
    # Nothing to find is not perfect recall: report no figure rather than 1.0.
    comparable = int((exact >= 0).sum())
    recall = candidates.recall_at_k(kept_table(kept, rows, k), exact) if comparable else None
    return {
        "sample_users": int(n_sample),
        "k": k,
        "exhaustive_candidates": comparable,
        "recall_at_k": None if recall is None else round(recall, 5),
        **({} if comparable else {"reason": "no sample: no sampled user has any candidate"}),
        "pipeline_s": round(pipeline_s, 3),
        "exhaustive_s": round(exact_s, 3),
    }


# ------------------------------------------------------------------------------ the job


# Counted, but neither skipped nor a warning: users without a location are scored, with
# neutral proximity and every distance limit passed. The run's metadata has them under "kept".
KEPT_REASONS = ("no_location",)


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
    kept = {reason: skipped.pop(reason) for reason in KEPT_REASONS if skipped.get(reason)}
    ctx.figures.skip(skipped, ctx.logger, "match.skip")
    if kept:
        ctx.figures.counts["kept"] = kept
        ctx.logger.info(
            "kept %s",
            ", ".join(f"{n} users with {reason}" for reason, n in kept.items()),
            extra={"action": "match.kept", "kept": kept},
        )
    return pop, rows_read
