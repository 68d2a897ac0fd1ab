"""The six pair signals, each in [0, 1], vectorized over pairs (a = user, b = candidate).

Every signal function takes the population and two aligned row arrays and returns
``(values, present)``: ``values`` is (p,) float64 with NaN where an input is missing,
``present`` is the matching (p,) bool mask. The scorer replaces missing values by
its configured neutral value.

* quiz:           (1 + cos(q_a, q_b)) / 2.
  Missing when either has no (or a zero) quiz vector.
* interest:       Σ_{i ∈ I_a ∩ I_b} min(w_a,i, w_b,i), clipped to [0, 1].
  Missing when either has no interests.
* rating_quality: rating_quality_b, clipped to [0, 1]. Missing when b has none.
* rating_fit:     clip(0.5 + 0.5 · cos(pref_a, dims_b), 0, 1).
  Missing when a has no preference, or either vector is zero.
* newness:        0.5 ** (max(account_age_days_b, 0) / half_life_days).
  Missing when the account age is NaN.
* proximity:      exp(−d_km / scale_km). Missing when either has no location.

quiz, interest and proximity are symmetric; rating_quality, rating_fit and newness
are directional (the reverse direction swaps a and b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import filters, sorting
from compute.population import Population

SIGNAL_NAMES: tuple[str, ...] = (
    "quiz",
    "interest",
    "rating_quality",
    "rating_fit",
    "newness",
    "proximity",
)
SYMMETRIC_SIGNALS: frozenset[str] = frozenset({"quiz", "interest", "proximity"})
N_SHARED_INTERESTS = 3
# Dense scratch for interest overlap: unique users × catalogue size, in float32 cells.
_DENSE_BUDGET_CELLS = 1 << 24

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
RowArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SignalParams:
    """Transforms of the signals (filled from YAML).

    Attributes
    ----------
    newness_half_life_days : float > 0
        Account age at which newness is 0.5.
    proximity_scale_km : float > 0
        Distance at which proximity is 1/e ≈ 0.37.
    """

    newness_half_life_days: float = 30.0
    proximity_scale_km: float = 25.0

    def __post_init__(self) -> None:
        for name in ("newness_half_life_days", "proximity_scale_km"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def unit_rows(
    vectors: npt.NDArray[np.float32], present: BoolArray
) -> tuple[npt.NDArray[np.float32], BoolArray]:
    """L2-normalize rows.

    Parameters
    ----------
    vectors : (n, d) float32
    present : (n,) bool

    Returns
    -------
    unit : (n, d) float32, C-contiguous
        ``v / ‖v‖``; zero rows where not valid.
    valid : (n,) bool
        ``present`` and a finite, non-zero norm.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
    valid = present & np.isfinite(norms) & (norms > 0)
    safe = np.where(valid, norms, 1.0)
    unit = np.where(valid[:, None], vectors / safe[:, None], 0.0)
    return np.ascontiguousarray(unit, dtype=np.float32), valid


def _cosine(
    left: npt.NDArray[np.float32], right: npt.NDArray[np.float32]
) -> tuple[FloatArray, BoolArray]:
    """Row-wise cosine of (p, d) arrays; NaN + False where either norm is 0 or not finite."""
    dots = np.einsum("ij,ij->i", left, right, dtype=np.float64)
    norm_l = np.sqrt(np.einsum("ij,ij->i", left, left, dtype=np.float64))
    norm_r = np.sqrt(np.einsum("ij,ij->i", right, right, dtype=np.float64))
    denom = norm_l * norm_r
    ok = np.isfinite(dots) & np.isfinite(denom) & (denom > 0)
    cos = np.full(dots.shape, np.nan)
    cos[ok] = np.clip(dots[ok] / denom[ok], -1.0, 1.0)
    return cos, ok


def quiz_similarity(
    pop: Population, a_rows: RowArray, b_rows: RowArray
) -> tuple[FloatArray, BoolArray]:
    """``(1 + cos(q_a, q_b)) / 2`` ∈ [0, 1]; (p,) float64 with NaN where missing, and mask."""
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    cos, ok = _cosine(pop.quiz_vectors[a], pop.quiz_vectors[b])
    ok &= pop.has_quiz[a] & pop.has_quiz[b]
    return np.where(ok, (1.0 + cos) / 2.0, np.nan), ok


def interest_overlap(
    pop: Population, a_rows: RowArray, b_rows: RowArray, n_shared: int = N_SHARED_INTERESTS
) -> tuple[FloatArray, BoolArray, RowArray]:
    """Weighted interest overlap and the top shared interests of each pair.

    ``overlap = Σ_{i ∈ I_a ∩ I_b} min(w_a,i, w_b,i)``, clipped to [0, 1] (weights sum
    to 1 per user, so 1 means identical weighted interests).

    Returns
    -------
    values : (p,) float64, NaN where either user has no interests
    present : (p,) bool
    shared_ids : (p, n_shared) int64
        Shared interest ids by decreasing ``min(w_a, w_b)`` then increasing id; -1 pad.
    """
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    p = a.size
    counts = np.diff(pop.interest_indptr)
    present = (counts[a] > 0) & (counts[b] > 0)
    overlap = np.zeros(p, dtype=np.float64)
    shared = np.full((p, n_shared), -1, dtype=np.int64)
    n_codes = int(pop.interest_code_ids.size)
    if p == 0 or n_codes == 0 or not present.any():
        return np.where(present, overlap, np.nan), present, shared

    unique_a, local_a = np.unique(a, return_inverse=True)
    users_per_chunk = max(1, _DENSE_BUDGET_CELLS // n_codes)
    weights = np.nan_to_num(pop.interest_weights, nan=0.0)
    for start in range(0, unique_a.size, users_per_chunk):
        chunk_users = unique_a[start : start + users_per_chunk]
        # Dense weights of this chunk's a-users: dense[local, code] = w_a.
        dense = np.zeros((chunk_users.size, n_codes), dtype=np.float32)
        lengths = counts[chunk_users]
        entries = _segment_entries(pop.interest_indptr[chunk_users], lengths)
        dense[np.repeat(np.arange(chunk_users.size), lengths), pop.interest_codes[entries]] = (
            weights[entries]
        )
        pair_idx = np.flatnonzero((local_a >= start) & (local_a < start + chunk_users.size))
        b_lengths = counts[b[pair_idx]]
        b_entries = _segment_entries(pop.interest_indptr[b[pair_idx]], b_lengths)
        entry_pair = np.repeat(pair_idx, b_lengths)
        codes = pop.interest_codes[b_entries]
        contrib = np.minimum(dense[local_a[entry_pair] - start, codes], weights[b_entries])
        overlap += np.bincount(entry_pair, weights=contrib, minlength=p)
        hit = contrib > 0
        if hit.any():
            _top_shared(shared, entry_pair[hit], codes[hit], contrib[hit], pop.interest_code_ids)
    values = np.where(present, np.clip(overlap, 0.0, 1.0), np.nan)
    return values, present, shared


def _segment_entries(starts: RowArray, lengths: npt.NDArray[np.int64]) -> RowArray:
    """Concatenated ``arange(start, start + length)`` for every segment, no Python loop."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def _top_shared(
    shared: RowArray,
    pair: RowArray,
    codes: npt.NDArray[np.int32],
    contrib: npt.NDArray[np.float32],
    code_ids: RowArray,
) -> None:
    """Write the top ``shared.shape[1]`` codes per pair into ``shared`` (in place)."""
    order = sorting.group_value_order(pair, contrib, codes)
    pair_sorted = pair[order]
    first = np.r_[True, pair_sorted[1:] != pair_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(pair_sorted.size), 0))
    rank = np.arange(pair_sorted.size) - group_start
    keep = rank < shared.shape[1]
    shared[pair_sorted[keep], rank[keep]] = code_ids[codes[order][keep]]


def rating_quality(
    pop: Population, a_rows: RowArray, b_rows: RowArray
) -> tuple[FloatArray, BoolArray]:
    """The candidate's ``rating_quality``, clipped to [0, 1]; NaN where b has none."""
    _, b = filters.check_pairs(pop, a_rows, b_rows)
    raw = pop.rating_quality[b].astype(np.float64)
    ok = pop.has_rating_quality[b] & np.isfinite(raw)
    return np.where(ok, np.clip(raw, 0.0, 1.0), np.nan), ok


def rating_fit(pop: Population, a_rows: RowArray, b_rows: RowArray) -> tuple[FloatArray, BoolArray]:
    """``clip(0.5 + 0.5 · cos(rating_preferences_a, rating_dims_b), 0, 1)``; NaN where missing."""
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    cos, ok = _cosine(pop.rating_preferences[a], pop.rating_dims[b])
    ok &= pop.has_preference[a]
    return np.where(ok, np.clip(0.5 + 0.5 * cos, 0.0, 1.0), np.nan), ok


def newness(
    pop: Population, a_rows: RowArray, b_rows: RowArray, half_life_days: float
) -> tuple[FloatArray, BoolArray]:
    """``0.5 ** (max(account_age_days_b, 0) / half_life_days)``; NaN where the age is NaN."""
    _, b = filters.check_pairs(pop, a_rows, b_rows)
    days = pop.account_age_days[b].astype(np.float64)
    ok = np.isfinite(days) | (days == np.inf)
    safe = np.where(ok, np.maximum(days, 0.0), 0.0)
    return np.where(ok, np.power(0.5, safe / half_life_days), np.nan), ok


def proximity(
    pop: Population,
    a_rows: RowArray,
    b_rows: RowArray,
    scale_km: float,
    distance_km: FloatArray | None = None,
) -> tuple[FloatArray, BoolArray]:
    """``exp(−d_km / scale_km)``; NaN where either user has no location."""
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    if distance_km is None:
        distance_km = filters.pair_distance_km(pop, a, b)
    ok = np.isfinite(distance_km)
    safe = np.where(ok, distance_km, 0.0)
    return np.where(ok, np.exp(-safe / scale_km), np.nan), ok


@dataclass(frozen=True, eq=False)
class PairSignals:
    """All signals of p pairs.

    Attributes
    ----------
    values : (p, 6) float64
        Columns in :data:`SIGNAL_NAMES` order, a → b direction; NaN = missing.
    reverse_values : (p, 6) float64 or None
        The b → a direction (only when requested).
    shared_interest_ids : (p, 3) int64
        Top shared interests, -1 padded.
    distance_km : (p,) float64
        NaN when either lacks a location.
    """

    values: FloatArray
    reverse_values: FloatArray | None
    shared_interest_ids: RowArray
    distance_km: FloatArray


def compute_signals(
    pop: Population,
    a_rows: npt.ArrayLike,
    b_rows: npt.ArrayLike,
    params: SignalParams | None = None,
    *,
    with_reverse: bool = False,
) -> PairSignals:
    """Compute every signal for the pairs, optionally in both directions.

    Parameters
    ----------
    pop : Population
    a_rows, b_rows : (p,) int
    params : SignalParams, optional
    with_reverse : bool
        Also compute the b → a direction (symmetric signals are reused).

    Returns
    -------
    PairSignals
    """
    params = params or SignalParams()
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    distance = filters.pair_distance_km(pop, a, b)
    interest, _, shared = interest_overlap(pop, a, b)
    symmetric = {
        "quiz": quiz_similarity(pop, a, b)[0],
        "interest": interest,
        "proximity": proximity(pop, a, b, params.proximity_scale_km, distance)[0],
    }

    def directional(x: RowArray, y: RowArray) -> dict[str, FloatArray]:
        return {
            "rating_quality": rating_quality(pop, x, y)[0],
            "rating_fit": rating_fit(pop, x, y)[0],
            "newness": newness(pop, x, y, params.newness_half_life_days)[0],
        }

    forward = symmetric | directional(a, b)
    values = (
        np.column_stack([forward[name] for name in SIGNAL_NAMES])
        if a.size
        else np.empty((0, len(SIGNAL_NAMES)))
    )
    reverse = None
    if with_reverse:
        backward = symmetric | directional(b, a)
        reverse = (
            np.column_stack([backward[name] for name in SIGNAL_NAMES])
            if a.size
            else np.empty((0, len(SIGNAL_NAMES)))
        )
    return PairSignals(
        values=values, reverse_values=reverse, shared_interest_ids=shared, distance_km=distance
    )
