"""Exact final scores of every (query, candidate) pair of a block, and the top of each row.

A *block* is a set of query rows and a set of candidate rows (in practice: the query users
of one filter cohort, own age band and geo cell, and every active user who could pass
their filters). :func:`rank_block` computes, as dense ``(rows × candidates)`` matrices,
the same score as :func:`compute.scoring.score_pairs`, masks every hard filter of
:func:`compute.filters.mutual_filter` both ways, and keeps the best ``keep`` candidates
per query row.

Nothing here is written twice: the signal terms are the registered signals of
:mod:`compute.signals` evaluated over the block by :mod:`compute.blockterms` (same
formulas, weights and neutral values as the pair path); the age and distance rules are
:func:`compute.filters.age_accepts` and :func:`compute.filters.within_limits`, broadcast.
What is block-specific is only *how* a kernel or filter is evaluated on a matrix (a matmul
for cosines and distances, a binary search of the exclusion keys per row). ``reciprocal``
scores b → a too (same symmetric terms, swapped directional ones) and fuses both; then the
candidate's dormancy factor and, when ``exposure_counts`` are given with a cap, the
exposure penalty multiply the score. Terms are float32 (distances float64), so a block
score differs from ``score_pairs`` by ~1e-6 at most; the callers keep ``top_k + margin``
per row and let ``score_pairs`` pick the exact top K from those.

Memory is bounded by processing query rows in chunks of at most ``chunk_entries`` matrix
cells. Each row's result depends only on that row and the candidate set it can reach: rows
are never mixed, and ties are broken by the exposure spread, a seeded hash of (user,
candidate, version) (:func:`compute.sorting.spread_keys`, as in the pair path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import blockterms, filters, scoring, signals, sorting
from compute.population import Population

RowArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
CHUNK_ENTRIES = 1 << 22
_MASKED = np.float32(-1.0)
# Sampled columns per kept column when guessing a row's cut (see _row_thresholds).
_SAMPLE_PER_KEEP = 8

FILTERS_COUNTED: tuple[str, ...] = ("self", "age", "distance", "excluded")


@dataclass(frozen=True, eq=False)
class RankedBlock:
    """The kept pairs of one block, sorted by (query row position, rank).

    Attributes
    ----------
    user_rows, cand_rows : (m,) int64
    score : (m,) float32
        Block score (≈ the ``score_pairs`` score, see the module docstring).
    rank : (m,) int32
        0-based rank within the query row's kept list.
    removed : dict[str, int]
        Block pairs removed per filter (first failing filter in
        :data:`compute.filters.FILTER_ORDER`; ``gender`` and ``inactive`` never fail inside
        a block because blocks are built from compatible, active users).
    """

    user_rows: RowArray
    cand_rows: RowArray
    score: F32
    rank: npt.NDArray[np.int32]
    removed: dict[str, int]


def transposed_exclusion_keys(pop: Population) -> RowArray:
    """(nnz_e,) int64 sorted keys ``excluded_row · n + row`` (who excluded each row)."""
    n = max(pop.n_users, 1)
    keys = pop.excluded_keys
    return np.sort((keys % n) * n + keys // n)


def _segments(keys: RowArray, rows: RowArray, n: int) -> tuple[RowArray, RowArray]:
    """(position of row in ``rows``, partner row) of every key ``row · n + partner``."""
    if keys.size == 0 or rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.searchsorted(keys, rows * n)
    ends = np.searchsorted(keys, (rows + 1) * n)
    lengths = ends - starts
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    entries = np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)
    return np.repeat(np.arange(rows.size, dtype=np.int64), lengths), keys[entries] % n


def _rows(name: str, rows: npt.ArrayLike, n: int, *, sort: bool = False) -> RowArray:
    """``rows`` as distinct int64 rows in [0, n) (sorted if ``sort``); errors name ``name``."""
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"{name} must be a 1-D integer array; got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must be in [0, {n}); got [{arr.min()}, {arr.max()}]")
    ordered = np.sort(arr)
    if ordered.size > 1 and bool((ordered[1:] == ordered[:-1]).any()):
        raise ValueError(f"{name} must be distinct")
    return ordered if sort else arr


def rank_block(
    pop: Population,
    query_rows: npt.ArrayLike,
    cand_rows: npt.ArrayLike,
    score_params: scoring.ScoreParams,
    filter_params: filters.FilterParams,
    keep: int,
    *,
    exposure_counts: npt.NDArray[np.int64] | None = None,
    reverse_exclusion_keys: RowArray | None = None,
    allowed: tuple[RowArray, RowArray] | None = None,
    features: blockterms.UserFeatures | None = None,
    chunk_entries: int = CHUNK_ENTRIES,
) -> RankedBlock:
    """Top ``keep`` candidates of each query row by exact block score, filters applied.

    Parameters
    ----------
    pop : Population
    query_rows : (q,) int
        Distinct query rows. Inactive ones get nothing when ``require_active``.
    cand_rows : (c,) int
        Distinct candidate rows, all *active* and gender-compatible with every query row
        (the caller builds blocks from compatible cohorts; other filters are masked here).
    score_params : ScoreParams
    filter_params : FilterParams
    keep : int ≥ 1
        Pairs kept per query row (``top_k + margin``).
    exposure_counts : (n,) int, optional
        Global top-K appearance counts; used only when ``score_params.exposure_cap`` is set
        (without them the cap does not enter the ranking).
    reverse_exclusion_keys : (nnz_e,) int64, optional
        :func:`transposed_exclusion_keys` of ``pop`` (computed here when omitted).
    allowed : ((p,) int64, (p,) int64), optional
        (position in ``query_rows``, candidate row) pairs: when given, only these pairs
        may be kept (ranking a FAISS neighbour list exactly).
    features : blockterms.UserFeatures, optional
        :func:`compute.blockterms.user_features` of ``pop`` (computed when omitted).
    chunk_entries : int
        Matrix cells per chunk (memory bound: ~20 bytes per cell).

    Returns
    -------
    RankedBlock
        Per query row: score desc, candidate user id asc; at most ``keep`` pairs.
    """
    queries = _rows("query_rows", query_rows, pop.n_users)
    # Sorted: columns are searched by row (self, exclusions, allowed pairs).
    cands = _rows("cand_rows", cand_rows, pop.n_users, sort=True)
    if not (isinstance(keep, int) and keep >= 1):
        raise ValueError(f"keep must be an int ≥ 1; got {keep!r}")
    removed = dict.fromkeys(filters.FILTER_ORDER, 0)
    empty = RankedBlock(
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.float32),
        np.empty(0, np.int32),
        removed,
    )
    if filter_params.require_active:
        queries_alive = pop.active[queries]
    else:
        queries_alive = np.ones(queries.size, dtype=np.bool_)
    if queries.size == 0 or cands.size == 0 or not queries_alive.any():
        return empty
    sp = score_params
    n = max(pop.n_users, 1)
    features = blockterms.user_features(pop) if features is None else features
    c_side = features.take(cands)
    terms = blockterms.BlockTerms(
        pop,
        cands,
        c_side,
        sp.weights.as_array(),
        signals.neutral_values(sp.neutral),
        sp.signal_params,
    )
    multiplier = np.ones(cands.size, dtype=np.float64)
    if sp.dormancy:
        multiplier *= scoring.dormancy_factor(
            pop.inactive_days[cands], sp.dormancy_grace_days, sp.dormancy_half_life_days
        )
    if sp.exposure_cap is not None and exposure_counts is not None:
        over = np.asarray(exposure_counts)[cands] > sp.exposure_cap
        multiplier = np.where(over, multiplier * sp.exposure_factor, multiplier)
    scale = np.ones(0) if np.all(multiplier == 1.0) else multiplier.astype(np.float32)
    cand_ids = pop.user_ids[cands]
    reverse_keys = (
        transposed_exclusion_keys(pop) if reverse_exclusion_keys is None else reverse_exclusion_keys
    )

    alive_positions = np.flatnonzero(queries_alive)
    per_chunk = max(1, chunk_entries // cands.size)
    out_users: list[RowArray] = []
    out_cands: list[RowArray] = []
    out_scores: list[F32] = []
    out_ranks: list[npt.NDArray[np.int32]] = []
    # Calibrated fusion's viewer rates, read once for the block (None, None otherwise).
    query_rates, cand_rates = scoring.fusion_rates(pop, queries, cands, sp)
    for start in range(0, alive_positions.size, per_chunk):
        positions = alive_positions[start : start + per_chunk]
        rows = queries[positions]
        q_side = features.take(rows)
        distance = None
        if filter_params.enforce_distance or terms.uses_distance:
            distance = blockterms.distance_matrix(q_side, c_side)
        within = None
        if filter_params.enforce_distance:
            # Decided on the float64 distance before the proximity formula reuses it.
            assert distance is not None
            within = filters.within_limits(distance, q_side.limit[:, None], c_side.limit[None, :])
            within[~q_side.located, :] = True
            within[:, ~c_side.located] = True
        forward, reverse = terms.directions(rows, q_side, distance, reciprocal=sp.reciprocal)
        del distance
        score = scoring.fuse(
            forward,
            reverse,
            sp.fusion,
            sp.calibration,
            None if query_rates is None else query_rates[positions][:, None],
            None if cand_rates is None else cand_rates[None, :],
        )
        del reverse
        if scale.size:
            score *= scale[None, :]
            np.clip(score, 0.0, 1.0, out=score)

        # Hard filters, both ways, counted in FILTER_ORDER (first failing filter): each
        # filter's count is the drop in surviving cells, so no ``ok & ~passes`` temporary.
        ok = np.ones(score.shape, dtype=np.bool_)
        self_col = np.searchsorted(cands, rows)
        is_self = (self_col < cands.size) & (cands[np.minimum(self_col, cands.size - 1)] == rows)
        ok[np.flatnonzero(is_self), self_col[is_self]] = False
        n_self = int(is_self.sum())
        removed["self"] += n_self
        alive = ok.size - n_self
        if filter_params.enforce_age:
            ok &= filters.age_accepts(
                c_side.years[None, :], q_side.age_min[:, None], q_side.age_max[:, None]
            )
            ok &= filters.age_accepts(
                q_side.years[:, None], c_side.age_min[None, :], c_side.age_max[None, :]
            )
            now = int(np.count_nonzero(ok))
            removed["age"] += alive - now
            alive = now
        if within is not None:
            ok &= within
            del within
            now = int(np.count_nonzero(ok))
            removed["distance"] += alive - now
            alive = now
        local_f, partner_f = _segments(pop.excluded_keys, rows, n)
        local_r, partner_r = _segments(reverse_keys, rows, n)
        local = np.concatenate([local_f, local_r])
        partner = np.concatenate([partner_f, partner_r])
        col = np.searchsorted(cands, partner)
        hit = (col < cands.size) & (cands[np.minimum(col, cands.size - 1)] == partner)
        if hit.any():
            pairs = np.unique(local[hit] * cands.size + col[hit])
            li, ci = np.divmod(pairs, cands.size)
            removed["excluded"] += int(np.count_nonzero(ok[li, ci]))
            ok[li, ci] = False
        if allowed is not None:
            in_chunk = np.isin(allowed[0], positions)
            a_local = np.searchsorted(positions, allowed[0][in_chunk])
            a_col = np.searchsorted(cands, allowed[1][in_chunk])
            permitted = np.zeros(score.shape, dtype=np.bool_)
            permitted[a_local, a_col] = True
            ok &= permitted
        _mask_cells(score, ok)
        del ok

        users, picked, values, ranks = _top_per_row(
            score, rows, pop.user_ids[rows], cand_ids, sp.spread_seed, keep
        )
        out_users.append(users)
        out_cands.append(cands[picked])
        out_scores.append(values)
        out_ranks.append(ranks)
    return RankedBlock(
        user_rows=np.concatenate(out_users),
        cand_rows=np.concatenate(out_cands),
        score=np.concatenate(out_scores),
        rank=np.concatenate(out_ranks),
        removed=removed,
    )


def _mask_cells(score: F32, ok: npt.NDArray[np.bool_]) -> None:
    """``score[~ok] = _MASKED`` in place, as a branch-free bit select.

    A masked store on a scattered mask costs ~3 ns per cell; selecting the bits with an
    all-ones / all-zeros int32 mask is five times faster and equally exact.
    """
    bits = score.view(np.int32)
    select = ok.astype(np.int32)
    np.negative(select, out=select)
    bits &= select
    np.invert(select, out=select)
    select &= _MASKED.view(np.int32)
    bits |= select


def _top_per_row(
    score: F32,
    rows: RowArray,
    row_ids: RowArray,
    cand_ids: RowArray,
    seed: int,
    keep: int,
) -> tuple[RowArray, RowArray, F32, npt.NDArray[np.int32]]:
    """Best ``keep`` unmasked columns per row: score desc, then the exposure spread.

    Each row gets a threshold t with at least ``keep`` unmasked columns ≥ t (or t = -0.5
    when it has fewer), so t is at most the keep-th largest value; every column with
    score ≥ t is then ordered exactly, ties by :func:`compute.sorting.spread_keys` of
    (row's user id, candidate's user id, ``seed``) as in the pair path, so the cut does
    not depend on column order and equal scores are not all given to the lowest ids.
    """
    n_cols = score.shape[1]
    above = score >= _row_thresholds(score, keep)[:, None]
    # Flat indices and a divmod: a third of the time of a 2-D np.nonzero.
    local, col = np.divmod(np.flatnonzero(above), n_cols)
    ties = sorting.spread_keys(row_ids[local], cand_ids[col], seed)
    order = sorting.group_value_order(local, score[local, col], ties)
    local, col = local[order], col[order]
    values = score[local, col]
    first = np.r_[True, local[1:] != local[:-1]] if local.size else np.empty(0, np.bool_)
    rank = np.arange(local.size) - np.maximum.accumulate(np.where(first, np.arange(local.size), 0))
    top = rank < keep
    return rows[local[top]], col[top], values[top], rank[top].astype(np.int32)


def _row_thresholds(score: F32, keep: int) -> F32:
    """(rows,) ≥ -0.5 values t with ≥ ``keep`` columns ≥ t, or -0.5 (see :func:`_top_per_row`).

    A partition of every row costs ~5 ns per cell. For wide rows, t is guessed from an
    evenly strided sample of columns instead, aiming at about twice ``keep`` columns
    above it; a guess is only used where a count over the full row confirms it leaves at
    least ``keep`` columns (so it is ≤ the keep-th largest), other rows are partitioned.
    """
    n_rows, n_cols = score.shape
    floor = np.float32(-0.5)
    threshold = np.full(n_rows, floor, dtype=np.float32)
    if n_cols <= keep:
        return threshold
    exact = np.ones(n_rows, dtype=np.bool_)
    stride = n_cols // (_SAMPLE_PER_KEEP * keep)
    if stride >= 2:
        sample = score[:, ::stride]
        width = sample.shape[1]
        k = min(width, -(-2 * keep * width // n_cols))
        guess = np.partition(sample, width - k, axis=1)[:, width - k]
        np.maximum(guess, floor, out=guess)
        exact = np.count_nonzero(score >= guess[:, None], axis=1) < keep
        threshold = guess
    if exact.any():
        part = np.partition(score[exact], n_cols - keep, axis=1)[:, n_cols - keep]
        threshold[exact] = np.maximum(part, floor)
    return threshold
