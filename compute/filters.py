"""Mutual hard filters over pairs of rows, and the filter cohorts used to partition search.

A pair (a, b) survives when, in both directions, each user would accept the other.
The filters, in the order used to attribute a removed pair to the *first* failing
one (:data:`FILTER_ORDER`):

1. ``self``     — ``a == b``.
2. ``inactive`` — either user not active (when ``FilterParams.require_active``).
3. ``gender``   — bit ``gender[b]`` of ``seeking_mask[a]`` and bit ``gender[a]`` of
   ``seeking_mask[b]`` must both be set.
4. ``age``      — ``age_min[a] ≤ ⌊age[b]⌋ ≤ age_max[a]`` and the same with a, b swapped.
5. ``distance`` — ``haversine(a, b) ≤ min(max_distance_km[a], max_distance_km[b])``;
   a NaN/inf limit means "no limit"; skipped (passes) when either lacks a location.
6. ``excluded`` — neither ``b ∈ excluded(a)`` nor ``a ∈ excluded(b)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import geo
from compute.population import ALL_GENDERS_MASK, N_GENDERS, Population

FILTER_ORDER: tuple[str, ...] = ("self", "inactive", "gender", "age", "distance", "excluded")

N_SEEKING_MASKS = ALL_GENDERS_MASK + 1
N_COHORTS = N_GENDERS * N_SEEKING_MASKS


@dataclass(frozen=True)
class FilterParams:
    """Switches for the hard filters (filled from YAML by the jobs layer).

    Attributes
    ----------
    require_active : bool
        Drop pairs where either user is inactive.
    enforce_age : bool
        Apply the mutual age-range filter.
    enforce_distance : bool
        Apply the mutual distance filter.
    """

    require_active: bool = True
    enforce_age: bool = True
    enforce_distance: bool = True


def _as_rows(name: str, rows: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    arr = np.asarray(rows)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer row indices; got {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must be in [0, {n}); got [{arr.min()}, {arr.max()}]")
    return arr


def check_pairs(
    pop: Population, a_rows: npt.ArrayLike, b_rows: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Validate and convert two aligned row arrays; raise ValueError/TypeError on misuse.

    Returns
    -------
    (a_rows, b_rows) : two (p,) int64
    """
    a = _as_rows("a_rows", a_rows, pop.n_users)
    b = _as_rows("b_rows", b_rows, pop.n_users)
    if a.shape != b.shape:
        raise ValueError(f"a_rows and b_rows must have equal length; got {a.size} and {b.size}")
    return a, b


def pair_distance_km(
    pop: Population, a_rows: npt.NDArray[np.int64], b_rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """(p,) float64 haversine distance of each pair; NaN when either lacks a location."""
    return geo.haversine_km(pop.lat[a_rows], pop.lon[a_rows], pop.lat[b_rows], pop.lon[b_rows])


def is_excluded(
    pop: Population, a_rows: npt.NDArray[np.int64], b_rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """(p,) bool: ``b ∈ excluded(a)`` or ``a ∈ excluded(b)``.

    Uses the population's sorted keys ``row·n + excluded_row`` and a binary search,
    so the cost is O(p log nnz) with no per-pair Python.
    """
    keys = pop.excluded_keys
    if keys.size == 0:
        return np.zeros(a_rows.shape, dtype=np.bool_)
    n = max(pop.n_users, 1)

    def member(query: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        pos = np.searchsorted(keys, query)
        found: npt.NDArray[np.bool_] = keys[np.minimum(pos, keys.size - 1)] == query
        return found

    return member(a_rows * n + b_rows) | member(b_rows * n + a_rows)


def _seeks(
    pop: Population, a_rows: npt.NDArray[np.int64], b_rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """a seeks b's gender (bit test; invalid gender codes never match)."""
    gender_b = pop.gender[b_rows].astype(np.int64)
    valid = (gender_b >= 0) & (gender_b < N_GENDERS)
    bits = np.right_shift(pop.seeking_mask[a_rows].astype(np.int64), np.where(valid, gender_b, 0))
    return valid & (bits & 1).astype(np.bool_)


def _age_ok(
    pop: Population, a_rows: npt.NDArray[np.int64], b_rows: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """a's range accepts b: age_min[a] ≤ ⌊age[b]⌋ ≤ age_max[a] (NaN age fails)."""
    return age_accepts(np.floor(pop.age[b_rows]), pop.age_min[a_rows], pop.age_max[a_rows])


def age_accepts(
    years: npt.NDArray[np.floating],
    age_min: npt.NDArray[np.number],
    age_max: npt.NDArray[np.number],
) -> npt.NDArray[np.bool_]:
    """The age rule, broadcast: ``age_min ≤ years ≤ age_max`` (NaN fails).

    ``years`` are completed years (⌊age⌋). Pairs pass (p,) arrays, blocks (q, 1) and
    (1, c) ones (:func:`compute.blockscore.rank_block`).
    """
    return (years >= age_min) & (years <= age_max)


def within_limits(
    distance_km: npt.NDArray[np.floating],
    limit_a: npt.NDArray[np.floating],
    limit_b: npt.NDArray[np.floating],
) -> npt.NDArray[np.bool_]:
    """The distance rule, broadcast: ``d ≤ min(limit_a, limit_b)``, limits inf = none.

    A NaN distance (unknown location) is decided by the caller (it passes).
    """
    return (distance_km <= limit_a) & (distance_km <= limit_b)


def distance_ok(
    pop: Population,
    a_rows: npt.NDArray[np.int64],
    b_rows: npt.NDArray[np.int64],
    distance_km: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.bool_]:
    """(p,) bool: distance within both users' limits, or unknown (neutral)."""
    if distance_km is None:
        distance_km = pair_distance_km(pop, a_rows, b_rows)
    limit_a = pop.max_distance_km[a_rows].astype(np.float64)
    limit_b = pop.max_distance_km[b_rows].astype(np.float64)
    return np.isnan(distance_km) | within_limits(
        distance_km,
        np.where(np.isnan(limit_a), np.inf, limit_a),
        np.where(np.isnan(limit_b), np.inf, limit_b),
    )


def mutual_filter(
    pop: Population,
    a_rows: npt.ArrayLike,
    b_rows: npt.ArrayLike,
    params: FilterParams | None = None,
) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Apply all hard filters to pairs, both directions.

    Parameters
    ----------
    pop : Population
    a_rows, b_rows : (p,) int
        Aligned row indices of the pairs.
    params : FilterParams, optional

    Returns
    -------
    keep : (p,) bool
    removed : dict[str, int]
        Pairs removed per filter, each attributed to the first failing filter in
        :data:`FILTER_ORDER`; every key is present.
    """
    params = params or FilterParams()
    a, b = check_pairs(pop, a_rows, b_rows)
    alive = np.ones(a.shape, dtype=np.bool_)
    removed: dict[str, int] = dict.fromkeys(FILTER_ORDER, 0)

    def apply(name: str, passes: npt.NDArray[np.bool_]) -> None:
        nonlocal alive
        failing = alive & ~passes
        removed[name] = int(failing.sum())
        alive = alive & passes

    apply("self", a != b)
    if params.require_active:
        apply("inactive", pop.active[a] & pop.active[b])
    apply("gender", _seeks(pop, a, b) & _seeks(pop, b, a))
    if params.enforce_age:
        apply("age", _age_ok(pop, a, b) & _age_ok(pop, b, a))
    if params.enforce_distance:
        # Only compute trigonometry for pairs still alive.
        idx = np.flatnonzero(alive)
        passes = np.ones(a.shape, dtype=np.bool_)
        passes[idx] = distance_ok(pop, a[idx], b[idx])
        apply("distance", passes)
    idx = np.flatnonzero(alive)
    passes = np.ones(a.shape, dtype=np.bool_)
    passes[idx] = ~is_excluded(pop, a[idx], b[idx])
    apply("excluded", passes)
    return alive, removed


def cohort_keys(
    gender: npt.NDArray[np.integer], seeking_mask: npt.NDArray[np.integer]
) -> npt.NDArray[np.int64]:
    """Filter cohort of each user: ``gender · 8 + (seeking_mask & 7)``.

    Users of one cohort have identical gender-filter behaviour, so candidate search
    can be partitioned by cohort (24 cohorts at most).
    """
    return gender.astype(np.int64) * N_SEEKING_MASKS + (
        seeking_mask.astype(np.int64) & ALL_GENDERS_MASK
    )


def cohorts_compatible(
    cohort_a: npt.NDArray[np.int64], cohort_b: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """(broadcast) bool: a user of cohort a and one of cohort b pass the gender filter.

    ``bit g_b of S_a`` and ``bit g_a of S_b``, where ``cohort = g · 8 + S``.
    """
    g_a, s_a = np.divmod(cohort_a, N_SEEKING_MASKS)
    g_b, s_b = np.divmod(cohort_b, N_SEEKING_MASKS)
    valid = (g_a >= 0) & (g_a < N_GENDERS) & (g_b >= 0) & (g_b < N_GENDERS)
    g_a = np.where(valid, g_a, 0)
    g_b = np.where(valid, g_b, 0)
    seeks: npt.NDArray[np.bool_] = (
        valid & ((s_a >> g_b) & 1).astype(bool) & ((s_b >> g_a) & 1).astype(bool)
    )
    return seeks


@dataclass(frozen=True)
class DirectionalCheck:
    """One hard filter for one pair, direction by direction (for explanations).

    ``a_accepts_b``: the filter passes from a's side (a seeks b's gender, b's age is in a's
    range, the distance is within a's limit, a has not liked/passed/blocked b); likewise
    ``b_accepts_a``. The pair survives the filter only when both hold.
    """

    name: str
    a_accepts_b: bool
    b_accepts_a: bool


def directional_checks(pop: Population, a: int, b: int) -> tuple[DirectionalCheck, ...]:
    """Every hard filter for the pair of rows (a, b), in :data:`FILTER_ORDER`, per direction.

    Agrees with :func:`mutual_filter`: the pair is kept exactly when every check passes
    both ways (distance counts as passing when either user has no location).
    """
    ra, rb = check_pairs(pop, np.array([a]), np.array([b]))
    distance = pair_distance_km(pop, ra, rb)
    unknown = bool(np.isnan(distance[0]))

    def within(limit_row: npt.NDArray[np.int64]) -> bool:
        limit = float(pop.max_distance_km[limit_row][0])
        return unknown or not np.isfinite(limit) or float(distance[0]) <= limit

    keys = pop.excluded_keys
    n = max(pop.n_users, 1)

    def excluded_by(x: npt.NDArray[np.int64], y: npt.NDArray[np.int64]) -> bool:
        key = int(x[0]) * n + int(y[0])
        i = int(np.searchsorted(keys, key))
        return i < keys.size and int(keys[i]) == key

    # The exclusion CSR is not symmetric: b ∈ excluded(a) means a acted on b (or was recorded
    # so); either direction removes the pair, and each side is reported separately.
    return (
        DirectionalCheck("self", a != b, a != b),
        DirectionalCheck("inactive", bool(pop.active[rb][0]), bool(pop.active[ra][0])),
        DirectionalCheck("gender", bool(_seeks(pop, ra, rb)[0]), bool(_seeks(pop, rb, ra)[0])),
        DirectionalCheck("age", bool(_age_ok(pop, ra, rb)[0]), bool(_age_ok(pop, rb, ra)[0])),
        DirectionalCheck("distance", within(ra), within(rb)),
        DirectionalCheck("excluded", not excluded_by(ra, rb), not excluded_by(rb, ra)),
    )
