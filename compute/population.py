"""The scored population: every per-user array the match job needs, aligned by row.

Row ``i`` of every array is one user. Rows, not user ids, are what the rest of
``compute/`` passes around (``a_rows``, ``b_rows``, ``query_rows``); user ids are
only used for deterministic tie-breaks and at the jobs boundary.

Two CSR structures hang off the rows:

* interests: ``interest_ids[interest_indptr[i]:interest_indptr[i + 1]]`` are the
  interests of row ``i`` with weights ``interest_weights[...]`` (summing to 1 per
  user, as written by the interest job);
* exclusions: ``excluded_rows[excluded_indptr[i]:excluded_indptr[i + 1]]`` are the
  rows that row ``i`` liked, passed or blocked, or that did so to row ``i``. The
  filter checks both directions, so the CSR need not be symmetric.

Bad rows are data: :func:`validate_population` returns a keep-mask plus counts per
reason, and :func:`clean_population` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from compute import validate
from compute.arrays import unique_codes

GENDER_WOMAN = 0
GENDER_MAN = 1
GENDER_NONBINARY = 2
N_GENDERS = 3
ALL_GENDERS_MASK = (1 << N_GENDERS) - 1

MIN_AGE = 18.0
MAX_AGE = 120.0

# name -> (dtype, leading-dimension rule). "n" = one per user, "n+1" = CSR indptr,
# "nnz:<indptr>" = one per CSR entry, "cat" = catalogue length, 2 = (n, d) matrix.
_PER_USER_1D: dict[str, np.dtype[Any]] = {
    "user_ids": np.dtype(np.int64),
    "gender": np.dtype(np.int8),
    "seeking_mask": np.dtype(np.int8),
    "age": np.dtype(np.float32),
    "age_min": np.dtype(np.int16),
    "age_max": np.dtype(np.int16),
    "max_distance_km": np.dtype(np.float32),
    "lat": np.dtype(np.float64),
    "lon": np.dtype(np.float64),
    "active": np.dtype(np.bool_),
    "account_age_days": np.dtype(np.float32),
    "inactive_days": np.dtype(np.float32),
    "has_quiz": np.dtype(np.bool_),
    "has_interest": np.dtype(np.bool_),
    "rating_quality": np.dtype(np.float32),
    "has_rating_quality": np.dtype(np.bool_),
    "has_preference": np.dtype(np.bool_),
    "like_rate_given": np.dtype(np.float32),
    "has_like_rate": np.dtype(np.bool_),
    "has_taste": np.dtype(np.bool_),
    "has_appeal": np.dtype(np.bool_),
}
_PER_USER_2D: dict[str, np.dtype[Any]] = {
    "quiz_vectors": np.dtype(np.float32),
    "interest_vectors": np.dtype(np.float32),
    "rating_dims": np.dtype(np.float32),
    "rating_preferences": np.dtype(np.float32),
    "taste_vectors": np.dtype(np.float32),
    "appeal_vectors": np.dtype(np.float32),
}
# Every per-user field, in declaration order: what a row of the population is.
PER_USER_FIELDS: tuple[str, ...] = (*_PER_USER_1D, *_PER_USER_2D)
# Behaviour fields (the likes job's tables): optional, absent = no behaviour known.
_BEHAVIOUR_FIELDS = (
    "like_rate_given",
    "has_like_rate",
    "taste_vectors",
    "has_taste",
    "appeal_vectors",
    "has_appeal",
)


def _coerce(name: str, value: Any, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Return ``value`` as a C-contiguous array of ``dtype``; refuse lossy kinds."""
    arr = np.asarray(value)
    if arr.dtype != dtype:
        lossless_kind = np.can_cast(arr.dtype, dtype, casting="same_kind")
        if dtype == np.bool_ and arr.dtype != np.bool_:
            lossless_kind = False
        if arr.size and not lossless_kind:
            raise TypeError(f"{name} must be {dtype} (or castable same-kind); got {arr.dtype}")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def _check_csr(name: str, indptr: npt.NDArray[np.int64], n_rows: int, n_entries: int) -> None:
    if indptr.shape != (n_rows + 1,):
        raise ValueError(f"{name}_indptr must be ({n_rows + 1},); got {indptr.shape}")
    if indptr[0] != 0 or indptr[-1] != n_entries:
        raise ValueError(
            f"{name}_indptr must start at 0 and end at {n_entries}; "
            f"got {indptr[0]} and {indptr[-1]}"
        )
    if np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}_indptr must be non-decreasing")


def _segments_sorted(indptr: npt.NDArray[np.int64], values: npt.NDArray[Any]) -> bool:
    """Whether ``values`` is non-decreasing within every CSR segment of ``indptr``."""
    steps = values[1:] >= values[:-1]
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < values.size)]
    steps[starts - 1] = True  # a new segment may start lower
    return bool(steps.all())


def _sort_csr_segments(
    indptr: npt.NDArray[np.int64], *columns: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], ...]:
    """Sort every CSR segment by its first column (stable); return reordered columns."""
    first = columns[0]
    if first.size < 2 or _segments_sorted(indptr, first):
        # Already in order (a stable sort would be the identity): spares a long population
        # rebuilt once per event batch an O(nnz log nnz) sort of every like it holds.
        return tuple(np.ascontiguousarray(c) for c in columns)
    owners = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    order = np.lexsort((columns[0], owners))
    return tuple(np.ascontiguousarray(c[order]) for c in columns)


@dataclass(frozen=True, eq=False)
class Population:
    """Per-user arrays for ``n`` users, aligned by row.

    Parameters
    ----------
    user_ids : (n,) int64
        Database ids; used for tie-breaks and output only.
    gender : (n,) int8
        0 woman, 1 man, 2 nonbinary.
    seeking_mask : (n,) int8
        Bit ``g`` set ⇔ the user seeks gender ``g``.
    age : (n,) float32
        Calendar age in completed years (whole numbers; NaN when unknown).
    age_min, age_max : (n,) int16
        The age range the user seeks, inclusive.
    max_distance_km : (n,) float32
        The user's distance limit; NaN or inf = no limit.
    lat, lon : (n,) float64
        Degrees; NaN in both = no location. Anything else that is not a point on Earth
        is dropped by :func:`validate_population` (``invalid_location``).
    active : (n,) bool
    account_age_days, inactive_days : (n,) float32
        Days since sign-up and since last activity.
    quiz_vectors : (n, dq) float32, has_quiz : (n,) bool
    interest_vectors : (n, di) float32, has_interest : (n,) bool
    interest_indptr : (n + 1,) int64
    interest_ids : (nnz_i,) int64
        Sorted within each user's segment on construction.
    interest_weights : (nnz_i,) float32
        Per-user weights summing to 1.
    catalogue_interest_ids : (m,) int64, catalogue_interest_names : (m,) object (str)
        Names for reasons.
    rating_quality : (n,) float32 in [0, 1], has_rating_quality : (n,) bool
    rating_dims : (n, nd) float32
        The user's centred per-dimension rating aggregates (as a candidate).
    rating_preferences : (n, nd) float32, has_preference : (n,) bool
    excluded_indptr : (n + 1,) int64, excluded_rows : (nnz_e,) int64
        Rows excluded by each row (like/pass/block, either direction).
    like_rate_given : (n,) float32, has_like_rate : (n,) bool, optional
        The likes job's shrunk like rate given (pickiness: low = picky).
    taste_vectors : (n, dl) float32, has_taste : (n,) bool, optional
    appeal_vectors : (n, dl) float32, has_appeal : (n,) bool, optional
        The likes job's taste (as the one who likes) and appeal (as the one liked) vectors.
        The behaviour fields default to "unknown for everyone" (zeros, False).
    """

    user_ids: npt.NDArray[np.int64]
    gender: npt.NDArray[np.int8]
    seeking_mask: npt.NDArray[np.int8]
    age: npt.NDArray[np.float32]
    age_min: npt.NDArray[np.int16]
    age_max: npt.NDArray[np.int16]
    max_distance_km: npt.NDArray[np.float32]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    active: npt.NDArray[np.bool_]
    account_age_days: npt.NDArray[np.float32]
    inactive_days: npt.NDArray[np.float32]
    quiz_vectors: npt.NDArray[np.float32]
    has_quiz: npt.NDArray[np.bool_]
    interest_vectors: npt.NDArray[np.float32]
    has_interest: npt.NDArray[np.bool_]
    interest_indptr: npt.NDArray[np.int64]
    interest_ids: npt.NDArray[np.int64]
    interest_weights: npt.NDArray[np.float32]
    catalogue_interest_ids: npt.NDArray[np.int64]
    catalogue_interest_names: npt.NDArray[np.object_]
    rating_quality: npt.NDArray[np.float32]
    has_rating_quality: npt.NDArray[np.bool_]
    rating_dims: npt.NDArray[np.float32]
    rating_preferences: npt.NDArray[np.float32]
    has_preference: npt.NDArray[np.bool_]
    excluded_indptr: npt.NDArray[np.int64]
    excluded_rows: npt.NDArray[np.int64]
    like_rate_given: npt.NDArray[np.float32] = None  # type: ignore[assignment]
    has_like_rate: npt.NDArray[np.bool_] = None  # type: ignore[assignment]
    taste_vectors: npt.NDArray[np.float32] = None  # type: ignore[assignment]
    has_taste: npt.NDArray[np.bool_] = None  # type: ignore[assignment]
    appeal_vectors: npt.NDArray[np.float32] = None  # type: ignore[assignment]
    has_appeal: npt.NDArray[np.bool_] = None  # type: ignore[assignment]
    # Derived on construction (not arguments): sorted exclusion keys row*n + row,
    # and dense interest codes 0..m-1 aligned with interest_ids.
    excluded_keys: npt.NDArray[np.int64] = field(init=False, repr=False)
    interest_codes: npt.NDArray[np.int32] = field(init=False, repr=False)
    interest_code_ids: npt.NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        n = int(np.asarray(self.user_ids).shape[0]) if np.ndim(self.user_ids) == 1 else -1
        if n < 0:
            raise ValueError(f"user_ids must be 1-D; got shape {np.shape(self.user_ids)}")
        for name in _BEHAVIOUR_FIELDS:
            if getattr(self, name) is None:
                dtype = _PER_USER_1D.get(name, _PER_USER_2D.get(name))
                put(name, np.zeros((n, 1) if name in _PER_USER_2D else (n,), dtype=dtype))
        for name, dtype in _PER_USER_1D.items():
            arr = _coerce(name, getattr(self, name), dtype)
            if arr.shape != (n,):
                raise ValueError(f"{name} must be ({n},); got {arr.shape}")
            put(name, arr)
        for name, dtype in _PER_USER_2D.items():
            arr = _coerce(name, getattr(self, name), dtype)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"{name} must be ({n}, d); got {arr.shape}")
            put(name, arr)
        if self.rating_dims.shape != self.rating_preferences.shape:
            raise ValueError(
                "rating_dims and rating_preferences must have the same shape; got "
                f"{self.rating_dims.shape} and {self.rating_preferences.shape}"
            )
        if self.taste_vectors.shape != self.appeal_vectors.shape:
            raise ValueError(
                "taste_vectors and appeal_vectors must have the same shape; got "
                f"{self.taste_vectors.shape} and {self.appeal_vectors.shape}"
            )

        interest_indptr = _coerce("interest_indptr", self.interest_indptr, np.dtype(np.int64))
        interest_ids = _coerce("interest_ids", self.interest_ids, np.dtype(np.int64))
        interest_weights = _coerce("interest_weights", self.interest_weights, np.dtype(np.float32))
        if interest_ids.ndim != 1 or interest_weights.shape != interest_ids.shape:
            raise ValueError(
                "interest_ids and interest_weights must be 1-D of equal length; got "
                f"{interest_ids.shape} and {interest_weights.shape}"
            )
        _check_csr("interest", interest_indptr, n, interest_ids.size)
        interest_ids, interest_weights = _sort_csr_segments(
            interest_indptr, interest_ids, interest_weights
        )
        put("interest_indptr", interest_indptr)
        put("interest_ids", interest_ids)
        put("interest_weights", interest_weights)
        code_ids, codes = unique_codes(interest_ids)
        put("interest_code_ids", code_ids)
        put("interest_codes", codes.astype(np.int32).reshape(-1))

        cat_ids = _coerce("catalogue_interest_ids", self.catalogue_interest_ids, np.dtype(np.int64))
        cat_names = np.asarray(self.catalogue_interest_names, dtype=object)
        if cat_ids.ndim != 1 or cat_names.shape != cat_ids.shape:
            raise ValueError(
                "catalogue_interest_ids and catalogue_interest_names must be 1-D of equal "
                f"length; got {cat_ids.shape} and {cat_names.shape}"
            )
        put("catalogue_interest_ids", cat_ids)
        put("catalogue_interest_names", cat_names)

        excluded_indptr = _coerce("excluded_indptr", self.excluded_indptr, np.dtype(np.int64))
        excluded_rows = _coerce("excluded_rows", self.excluded_rows, np.dtype(np.int64))
        if excluded_rows.ndim != 1:
            raise ValueError(f"excluded_rows must be 1-D; got {excluded_rows.shape}")
        _check_csr("excluded", excluded_indptr, n, excluded_rows.size)
        if excluded_rows.size and (excluded_rows.min() < 0 or excluded_rows.max() >= n):
            raise ValueError(
                f"excluded_rows must be row indices in [0, {n}); got range "
                f"[{excluded_rows.min()}, {excluded_rows.max()}]"
            )
        (excluded_rows,) = _sort_csr_segments(excluded_indptr, excluded_rows)
        put("excluded_indptr", excluded_indptr)
        put("excluded_rows", excluded_rows)
        owners = np.repeat(np.arange(n, dtype=np.int64), np.diff(excluded_indptr))
        # Segments are sorted and owners ascend, so the keys are already sorted.
        put("excluded_keys", owners * max(n, 1) + excluded_rows)

    @property
    def n_users(self) -> int:
        """Number of rows ``n``."""
        return int(self.user_ids.shape[0])

    @property
    def has_location(self) -> npt.NDArray[np.bool_]:
        """(n,) bool: both ``lat`` and ``lon`` are finite."""
        return np.isfinite(self.lat) & np.isfinite(self.lon)

    def subset_rows(self, rows: npt.ArrayLike) -> Population:
        """Return the population restricted to ``rows`` (renumbered 0..len(rows)-1).

        Parameters
        ----------
        rows : (m,) int
            Distinct row indices, kept in the given order.

        Returns
        -------
        Population
            Exclusions pointing at dropped rows are removed; the others are renumbered.
        """
        rows_arr = np.asarray(rows)
        if rows_arr.ndim != 1 or (rows_arr.size and rows_arr.dtype.kind not in "iu"):
            raise TypeError(f"rows must be a 1-D integer array; got {rows_arr.dtype}")
        rows_arr = rows_arr.astype(np.int64)
        n = self.n_users
        if rows_arr.size and (rows_arr.min() < 0 or rows_arr.max() >= n):
            raise ValueError(f"rows must be in [0, {n}); got [{rows_arr.min()}, {rows_arr.max()}]")
        if np.unique(rows_arr).size != rows_arr.size:
            raise ValueError("rows must be distinct")
        new_index = np.full(n, -1, dtype=np.int64)
        new_index[rows_arr] = np.arange(rows_arr.size, dtype=np.int64)

        values: dict[str, Any] = {}
        for name in (*_PER_USER_1D, *_PER_USER_2D):
            values[name] = getattr(self, name)[rows_arr]

        def take_csr(
            indptr: npt.NDArray[np.int64], *columns: npt.NDArray[Any]
        ) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[Any]]]:
            lengths = np.diff(indptr)[rows_arr]
            starts = indptr[:-1][rows_arr]
            entry = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
                lengths.sum(), dtype=np.int64
            )
            new_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            return new_indptr, [c[entry] for c in columns]

        values["interest_indptr"], (values["interest_ids"], values["interest_weights"]) = take_csr(
            self.interest_indptr, self.interest_ids, self.interest_weights
        )
        ex_indptr, (ex_rows,) = take_csr(self.excluded_indptr, self.excluded_rows)
        mapped = new_index[ex_rows]
        keep = mapped >= 0
        owner = np.repeat(np.arange(rows_arr.size), np.diff(ex_indptr))[keep]
        values["excluded_indptr"] = np.concatenate(
            [[0], np.cumsum(np.bincount(owner, minlength=rows_arr.size))]
        ).astype(np.int64)
        values["excluded_rows"] = mapped[keep]
        values["catalogue_interest_ids"] = self.catalogue_interest_ids
        values["catalogue_interest_names"] = self.catalogue_interest_names
        return Population(**values)


# Why a user is dropped (neither scored nor suggested), in the order a user is counted under
# the first that applies; then the counts of rows that stay but lose a value or a signal.
DROP_REASONS = (
    "age_out_of_range",
    "bad_age_range",
    "bad_gender",
    "bad_seeking_mask",
    "bad_max_distance",
    "invalid_location",
)
VALIDATION_REASONS = ("nan_vector", "nan_rating", *DROP_REASONS, "no_location")


def location_status(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Split coordinates into missing and invalid ones.

    Parameters
    ----------
    lat, lon : (n,) float64
        Degrees; NaN in both = no location (the loader's encoding of NULL).

    Returns
    -------
    missing : (n,) bool
        Both coordinates NaN: a user without a location.
    invalid : (n,) bool
        Not missing, and not a point on Earth: latitude outside [-90, 90] or longitude
        outside [-180, 180], ±inf, or one coordinate NaN and the other not.
    """
    missing = np.isnan(lat) & np.isnan(lon)
    on_earth = (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)  # False for NaN and ±inf
    return missing, ~missing & ~on_earth


def validate_population(
    pop: Population, *, min_age: float = MIN_AGE, max_age: float = MAX_AGE
) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Flag bad users.

    Parameters
    ----------
    pop : Population
    min_age, max_age : float
        The ages a profile may have (config ``filters.min_age``/``max_age``).

    Returns
    -------
    keep : (n,) bool
        False for users who must be neither scored nor suggested (:data:`DROP_REASONS`):
        ``age`` not in [min_age, max_age] (or NaN) → ``age_out_of_range``;
        ``age_min > age_max`` → ``bad_age_range``; ``gender`` not in {0, 1, 2} →
        ``bad_gender``; ``seeking_mask`` not in 1..7 (seeks nobody, or an unknown
        gender) → ``bad_seeking_mask``; a negative ``max_distance_km`` (NaN and +inf
        mean no limit) → ``bad_max_distance``; coordinates that are not a point on Earth
        (:func:`location_status`) → ``invalid_location``, so that they can never
        escape a distance limit as "no location" would. Each dropped user is counted
        once, under the first failing reason in that order.
    counts : dict[str, int]
        Every reason of :data:`VALIDATION_REASONS`, 0 when none. Also counts rows that
        stay but lose a signal: a quiz or interest vector with a NaN (``nan_vector``,
        per vector; :func:`clean_population` treats it as absent), a NaN rating quality
        / preference / dims row (``nan_rating``), and kept users without a location
        (``no_location``: distance filter and proximity are neutral for their pairs).
    """
    if not min_age <= max_age:
        raise ValueError(f"min_age must be <= max_age; got {min_age} and {max_age}")
    missing_location, invalid_location = location_status(pop.lat, pop.lon)
    age_bad = ~((pop.age >= min_age) & (pop.age <= max_age))
    drops = [
        ("age_out_of_range", age_bad),
        ("bad_age_range", pop.age_min > pop.age_max),
        ("bad_gender", ~np.isin(pop.gender, np.arange(N_GENDERS))),
        ("bad_seeking_mask", (pop.seeking_mask < 1) | (pop.seeking_mask > ALL_GENDERS_MASK)),
        ("bad_max_distance", pop.max_distance_km < 0),
        ("invalid_location", invalid_location),
    ]
    keep = validate.keep_mask(pop.n_users, drops)
    nan_quiz = pop.has_quiz & np.isnan(pop.quiz_vectors).any(axis=1)
    nan_interest = pop.has_interest & np.isnan(pop.interest_vectors).any(axis=1)
    nan_rating = (
        (pop.has_rating_quality & np.isnan(pop.rating_quality))
        | (pop.has_preference & np.isnan(pop.rating_preferences).any(axis=1))
        | np.isnan(pop.rating_dims).any(axis=1)
    )
    counts = {
        "nan_vector": int(nan_quiz.sum() + nan_interest.sum()),
        "nan_rating": int(nan_rating.sum()),
        **validate.classify_rows(pop.n_users, drops),
        "no_location": int((keep & missing_location).sum()),
    }
    return keep, counts


def clean_population(
    pop: Population, *, min_age: float = MIN_AGE, max_age: float = MAX_AGE
) -> tuple[Population, npt.NDArray[np.int64], dict[str, int]]:
    """Apply :func:`validate_population`: drop bad users, neutralise bad values.

    Returns
    -------
    cleaned : Population
        Bad users removed (rows renumbered); NaN vectors zeroed with their
        ``has_*`` flag cleared; NaN rating values zeroed (and the flag cleared).
        Every kept user has either a valid location or none (both coordinates NaN).
    kept_rows : (m,) int64
        Rows of ``pop`` that ``cleaned`` keeps, in order.
    counts : dict[str, int]
        As returned by :func:`validate_population`.
    """
    keep, counts = validate_population(pop, min_age=min_age, max_age=max_age)
    changes: dict[str, Any] = {}
    for vec_name, flag_name in (("quiz_vectors", "has_quiz"), ("interest_vectors", "has_interest")):
        vectors = getattr(pop, vec_name)
        bad = np.isnan(vectors).any(axis=1)
        if bad.any():
            changes[vec_name] = np.where(bad[:, None], np.float32(0), vectors)
            changes[flag_name] = getattr(pop, flag_name) & ~bad
    quality_bad = np.isnan(pop.rating_quality)
    if quality_bad.any():
        changes["rating_quality"] = np.where(quality_bad, np.float32(0), pop.rating_quality)
        changes["has_rating_quality"] = pop.has_rating_quality & ~quality_bad
    pref_bad = np.asarray(np.isnan(pop.rating_preferences).any(axis=1))
    if pref_bad.any():
        changes["rating_preferences"] = np.where(
            pref_bad[:, None], np.float32(0), pop.rating_preferences
        )
        changes["has_preference"] = pop.has_preference & ~pref_bad
    dims_bad = np.asarray(np.isnan(pop.rating_dims).any(axis=1))
    if dims_bad.any():
        changes["rating_dims"] = np.where(dims_bad[:, None], np.float32(0), pop.rating_dims)
    cleaned = replace(pop, **changes) if changes else pop
    kept_rows = np.flatnonzero(keep).astype(np.int64)
    if kept_rows.size != pop.n_users:
        cleaned = cleaned.subset_rows(kept_rows)
    return cleaned, kept_rows, counts
