"""Ratings: per-profile aggregates, per-rater taste preferences, and rating fit.

Notation: ``d`` indexes rating dimensions (sorted by id), ``lo_d``/``hi_d`` its
scale, ``r_d = hi_d - lo_d``, ``m = prior_weight``.

Validation (``validate_ratings``) skips and counts rows, each under the first
reason that applies, in this order: ``unknown_dimension``, ``out_of_scale``
(outside ``[lo_d, hi_d]`` or non-finite), ``unknown_user`` (rater or rated not
known), ``self_rating``, ``duplicate_rating`` (a second valid row for the same
(rater, rated, dimension): the **last** row in input order is kept, so a caller
ordering by time keeps the latest rating).

Aggregates (``rating_global_means``, ``rater_leniency``, ``without_leniency`` then
``rating_aggregates``)::

    g_d        = mean of all valid ratings on d       (scale midpoint if there are none)
    b_rd       = (sum of rater r's ratings on d - n_rd g_d) / (n_rd + m)   (r's leniency)
    v'         = clip(v - b_rd, lo_d, hi_d)           (each rating less its rater's leniency)
    n_pd, mu_pd = count and mean of the v' of profile p's ratings on d
    s_pd       = (n_pd * mu_pd + m * g_d) / (n_pd + m)   (= g_d when n_pd = 0)
    quality_p  = mean_d clip((s_pd - lo_d) / r_d, 0, 1)  in [0, 1]

Raters differ in how high they rate: a profile rated by lenient raters would otherwise
stand above one rated by strict raters for the same impression. The leniency is shrunk
towards 0 with the same ``m`` pseudo-ratings as the means (a rater with few ratings is
mostly taken at their word). ``g_d`` and each rater's leniency depend on ratings beyond a
profile's own, so the jobs layer computes ``g`` over everyone and the leniency of a
profile's raters over all their ratings (grouped per value, :class:`ValueGroups`) and passes
them to single-profile runs: with the same ``g`` and groups a single-profile aggregate
equals the batch row.

Preferences (``rating_preferences``). Over the distinct profiles ``j`` rater
``u`` rated::

    x_uj  = mean over the dimensions u rated j on of (value - lo_d) / r_d
            (u's overall liking of j, in [0, 1])
    y_jd  = (s_jd - lo_d) / r_d          (j's shrunk standing on d, from the given aggregates;
                                          g_d when j has no aggregate row)
    c_ud  = (1/n_u) sum_j (x_uj - mean_j x_uj) (y_jd - mean_j y_jd)     (covariance)
    pref_u = c_u / ||c_u||_2

``pref_u`` points at the dimensions on which the profiles ``u`` likes more than
usual stand out. Covariance rather than correlation: the spread of ``x`` is a
common factor of every component and cancels in the normalization anyway,
while dividing by the spread of ``y_d`` would inflate dimensions on which the
rater's profiles barely differ (pure noise) and divide by zero when they do not
differ at all. A rater with fewer than ``min_ratings_for_preference`` distinct
rated profiles gets no preference (``too_few_ratings``); one whose ``c_u`` is
numerically zero (``max_d |c_ud| <= 1e-9``, e.g. the same rating for everyone)
gets none either (``zero_preference``).

Rating fit (``rating_fit``) of a rater's preference ``pref`` and a candidate's
centred aggregates ``z_d = (s_d - g_d) / r_d`` (``RatingAggregates.centred``)::

    fit = 0.5 + 0.5 * cos(pref, z)     in [0, 1]

1 when the candidate stands out exactly on what the rater likes, 0 when on
the opposite, 0.5 when orthogonal. Undefined (``valid`` False, fit reported as
0.5) when either vector is missing, non-finite or zero: a candidate exactly at
the population mean, or never rated, carries no direction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from compute import validate

RATING_ROW_REASONS = (
    "unknown_dimension",
    "out_of_scale",
    "unknown_user",
    "self_rating",
    "duplicate_rating",
)
PREFERENCE_USER_REASONS = ("too_few_ratings", "zero_preference")

# Below this, a covariance vector is rounding noise, not taste.
_ZERO_COVARIANCE = 1e-9
# Below this, a centred candidate vector is the population mean up to rounding.
_ZERO_CENTRED = 1e-12


@dataclass(frozen=True)
class RatingParams:
    """Tunable rating parameters (filled from YAML by the jobs layer).

    Attributes
    ----------
    prior_weight : float
        ``m``, pseudo-count of the global mean in the shrunk mean; finite, >= 0.
    min_ratings_for_preference : int
        Distinct rated profiles a rater needs for a preference; >= 2 (one
        profile has no covariance).
    """

    prior_weight: float
    min_ratings_for_preference: int

    def __post_init__(self) -> None:
        if isinstance(self.prior_weight, bool) or not isinstance(self.prior_weight, int | float):
            raise TypeError(f"prior_weight must be a number; got {self.prior_weight!r}")
        if not np.isfinite(self.prior_weight) or self.prior_weight < 0:
            raise ValueError(f"prior_weight must be finite and >= 0; got {self.prior_weight}")
        value = self.min_ratings_for_preference
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"min_ratings_for_preference must be an int; got {value!r}")
        if value < 2:
            raise ValueError(f"min_ratings_for_preference must be >= 2; got {value}")


@dataclass(frozen=True, eq=False)
class RatingDimensions:
    """Rating dimensions, stored sorted by id (input order does not matter).

    Attributes
    ----------
    dimension_ids : (d,) int64, unique
    scale_min, scale_max : (d,) float64, finite, ``scale_min < scale_max``

    A contradictory catalogue raises ``ValueError``: it is configuration.
    """

    dimension_ids: npt.NDArray[np.int64]
    scale_min: npt.NDArray[np.float64]
    scale_max: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        dimension_ids = validate.as_ids("dimension_ids", self.dimension_ids)
        scale_min = validate.as_floats("scale_min", self.scale_min)
        scale_max = validate.as_floats("scale_max", self.scale_max)
        validate.check_same_length(
            dimension_ids=dimension_ids, scale_min=scale_min, scale_max=scale_max
        )
        validate.check_unique("dimension_ids", dimension_ids)
        bad = ~(np.isfinite(scale_min) & np.isfinite(scale_max) & (scale_min < scale_max))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                "dimension scales must be finite with scale_min < scale_max; got "
                f"[{scale_min[i]}, {scale_max[i]}] for dimension {dimension_ids[i]}"
            )
        order = np.argsort(dimension_ids, kind="stable")
        object.__setattr__(self, "dimension_ids", dimension_ids[order])
        object.__setattr__(self, "scale_min", scale_min[order])
        object.__setattr__(self, "scale_max", scale_max[order])

    @property
    def ranges(self) -> npt.NDArray[np.float64]:
        """(d,) float64: ``scale_max - scale_min``, > 0."""
        return self.scale_max - self.scale_min


@dataclass(frozen=True, eq=False)
class ValidRatings:
    """Rating rows that passed :func:`validate_ratings`, in input order.

    Attributes
    ----------
    rater_ids, rated_ids, dimension_ids : (n,) int64
    values : (n,) float64, finite, within their dimension's scale
    skipped : dict[str, int]
        Row counts for every reason in ``RATING_ROW_REASONS``.
    """

    rater_ids: npt.NDArray[np.int64]
    rated_ids: npt.NDArray[np.int64]
    dimension_ids: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    skipped: dict[str, int]


@dataclass(frozen=True, eq=False)
class RatingAggregates:
    """Per-profile, per-dimension rating aggregates (columns = dimensions by id).

    Build with :func:`rating_aggregates` or, from stored counts and means,
    :meth:`from_counts_means`; both apply the same formulas.

    Attributes
    ----------
    profile_ids : (n,) int64
    counts : (n, d) int64
    means : (n, d) float64
        NaN exactly where ``counts == 0`` (there is no mean to report).
    shrunk_means : (n, d) float64, finite
    quality : (n,) float64 in [0, 1]
    global_means : (d,) float64, finite
    """

    profile_ids: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    means: npt.NDArray[np.float64]
    shrunk_means: npt.NDArray[np.float64]
    quality: npt.NDArray[np.float64]
    global_means: npt.NDArray[np.float64]

    @classmethod
    def from_counts_means(
        cls,
        profile_ids: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
        means: npt.NDArray[np.float64],
        global_means: npt.NDArray[np.float64],
        dimensions: RatingDimensions,
        params: RatingParams,
    ) -> RatingAggregates:
        """Derive shrunk means and quality from counts and raw means.

        Parameters
        ----------
        profile_ids : (n,) int64, unique
        counts : (n, d) integer, >= 0
        means : (n, d) float64; finite where ``counts > 0``, ignored elsewhere
        global_means : (d,) float64, finite
        dimensions : RatingDimensions
        params : RatingParams
        """
        profile_ids = validate.as_ids("profile_ids", profile_ids)
        validate.check_unique("profile_ids", profile_ids)
        n_dims = len(dimensions.dimension_ids)
        global_means = _check_global_means(global_means, n_dims)
        shape = (len(profile_ids), n_dims)
        if not isinstance(counts, np.ndarray) or counts.shape != shape:
            raise ValueError(f"counts must be an array of shape {shape}; got {_shape(counts)}")
        if counts.dtype.kind not in "iu" or (counts.size and counts.min() < 0):
            raise ValueError(f"counts must be non-negative integers; got dtype {counts.dtype}")
        if not isinstance(means, np.ndarray) or means.shape != shape:
            raise ValueError(f"means must be an array of shape {shape}; got {_shape(means)}")
        counts = counts.astype(np.int64, copy=False)
        rated = counts > 0
        means = means.astype(np.float64, copy=False)
        if not np.all(np.isfinite(means[rated])):
            raise ValueError("means must be finite wherever counts > 0")
        safe_means = np.where(rated, means, 0.0)
        m = float(params.prior_weight)
        # n = 0 is special-cased so an unrated cell is exactly g (and m = 0 stays defined).
        denominators = np.where(rated, counts + m, 1.0)
        shrunk = np.where(
            rated, (counts * safe_means + m * global_means) / denominators, global_means
        )
        standing = np.clip((shrunk - dimensions.scale_min) / dimensions.ranges, 0.0, 1.0)
        quality = standing.mean(axis=1) if n_dims else np.full(len(profile_ids), 0.5)
        return cls(
            profile_ids=profile_ids,
            counts=counts,
            means=np.where(rated, means, np.nan),
            shrunk_means=shrunk,
            quality=quality,
            global_means=global_means,
        )

    def centred(self, dimensions: RatingDimensions) -> npt.NDArray[np.float64]:
        """(n, d) float64: ``(shrunk_mean - global_mean) / range``, input of ``rating_fit``."""
        return (self.shrunk_means - self.global_means) / dimensions.ranges

    def long_rows(self, dimensions: RatingDimensions) -> pd.DataFrame:
        """The rated cells as rows for ``profile_rating_aggregates``.

        Returns
        -------
        DataFrame
            Columns ``profile_id`` int64, ``dimension_id`` int64, ``count`` int64,
            ``mean`` float64, ``shrunk_mean`` float64; only cells with
            ``count > 0`` (so no NaN), sorted by profile then dimension.
        """
        rows, cols = np.nonzero(self.counts > 0)
        return pd.DataFrame(
            {
                "profile_id": self.profile_ids[rows],
                "dimension_id": dimensions.dimension_ids[cols],
                "count": self.counts[rows, cols],
                "mean": self.means[rows, cols],
                "shrunk_mean": self.shrunk_means[rows, cols],
            }
        )


@dataclass(frozen=True, eq=False)
class RatingPreferences:
    """Result of :func:`rating_preferences`.

    Attributes
    ----------
    rater_ids : (r,) int64
        Raters that got a preference, in the order requested.
    vectors : (r, d) float64, unit L2 norm, finite
    n_rated : (r,) int32
        Distinct profiles behind each preference.
    skipped : dict[str, int]
        Requested raters per reason in ``PREFERENCE_USER_REASONS``.
    """

    rater_ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float64]
    n_rated: npt.NDArray[np.int32]
    skipped: dict[str, int]


def _shape(value: object) -> object:
    return value.shape if isinstance(value, np.ndarray) else type(value).__name__


def _check_global_means(global_means: object, n_dims: int) -> npt.NDArray[np.float64]:
    global_means = validate.as_floats("global_means", global_means)
    if len(global_means) != n_dims or not np.all(np.isfinite(global_means)):
        raise ValueError(
            f"global_means must be ({n_dims},) finite, aligned with the dimensions; "
            f"got shape {global_means.shape}"
        )
    return global_means


def validate_ratings(
    rater_ids: npt.NDArray[np.int64],
    rated_ids: npt.NDArray[np.int64],
    dimension_ids: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    dimensions: RatingDimensions,
    known_user_ids: npt.NDArray[np.int64],
) -> ValidRatings:
    """Skip and count bad rating rows (reasons and order in the module docstring).

    Parameters
    ----------
    rater_ids, rated_ids, dimension_ids : (n,) int64
    values : (n,) float64
    dimensions : RatingDimensions
    known_user_ids : (k,) int64
        Every user id that exists (any order, repeats allowed).

    Returns
    -------
    ValidRatings
    """
    if not isinstance(dimensions, RatingDimensions):
        raise TypeError(f"dimensions must be RatingDimensions; got {type(dimensions).__name__}")
    rater_ids = validate.as_ids("rater_ids", rater_ids)
    rated_ids = validate.as_ids("rated_ids", rated_ids)
    dimension_ids = validate.as_ids("dimension_ids", dimension_ids)
    values = validate.as_floats("values", values)
    known = np.unique(validate.as_ids("known_user_ids", known_user_ids))
    n_rows = validate.check_same_length(
        rater_ids=rater_ids, rated_ids=rated_ids, dimension_ids=dimension_ids, values=values
    )
    dim_pos, dim_found = validate.lookup(dimensions.dimension_ids, dimension_ids)
    in_scale = (values >= dimensions.scale_min[dim_pos]) & (values <= dimensions.scale_max[dim_pos])
    _, rater_known = validate.lookup(known, rater_ids)
    rated_pos, rated_known = validate.lookup(known, rated_ids)
    reasons = [
        ("unknown_dimension", ~dim_found),
        ("out_of_scale", ~(np.isfinite(values) & in_scale)),
        ("unknown_user", ~(rater_known & rated_known)),
        ("self_rating", rater_ids == rated_ids),
    ]
    candidates = validate.keep_mask(n_rows, reasons)
    _, rater_codes = np.unique(rater_ids, return_inverse=True)
    n_dims = max(len(dimensions.dimension_ids), 1)
    keys = (rater_codes.astype(np.int64) * max(len(known), 1) + rated_pos) * n_dims + dim_pos
    duplicate = validate.duplicate_mask(keys, candidates, keep="last")
    reasons.append(("duplicate_rating", duplicate))
    keep = candidates & ~duplicate
    return ValidRatings(
        rater_ids=rater_ids[keep],
        rated_ids=rated_ids[keep],
        dimension_ids=dimension_ids[keep],
        values=values[keep],
        skipped=validate.classify_rows(n_rows, reasons),
    )


def _dimension_positions(
    ratings: ValidRatings, dimensions: RatingDimensions
) -> npt.NDArray[np.int64]:
    positions, found = validate.lookup(dimensions.dimension_ids, ratings.dimension_ids)
    if not found.all():
        raise ValueError("ratings hold dimension ids missing from dimensions; validate with them")
    return positions


def rating_global_means(
    ratings: ValidRatings, dimensions: RatingDimensions
) -> npt.NDArray[np.float64]:
    """Population mean rating per dimension, ``g_d``.

    Returns
    -------
    (d,) float64
        Aligned with ``dimensions.dimension_ids``; the scale midpoint for a
        dimension without ratings, so always finite.
    """
    positions = _dimension_positions(ratings, dimensions)
    n_dims = len(dimensions.dimension_ids)
    counts = np.bincount(positions, minlength=n_dims)
    sums = np.bincount(positions, weights=ratings.values, minlength=n_dims)
    midpoints = (dimensions.scale_min + dimensions.scale_max) / 2.0
    return np.where(counts > 0, sums / np.maximum(counts, 1), midpoints)


@dataclass(frozen=True, eq=False)
class ValueGroups:
    """Valid ratings counted per (rater, dimension, value), sorted by those three: what
    :func:`rater_leniency` reads. :func:`value_groups` makes them from rating rows; the
    jobs layer's grouped query returns the same rows for some raters without reading the
    others' ratings.

    Attributes
    ----------
    rater_ids, dimension_ids : (k,) int64
    values : (k,) float64
    counts : (k,) int64, > 0
    """

    rater_ids: npt.NDArray[np.int64]
    dimension_ids: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]


def value_groups(ratings: ValidRatings) -> ValueGroups:
    """``ratings`` counted per (rater, dimension, value), sorted by rater, dimension, value."""
    order = np.lexsort((ratings.values, ratings.dimension_ids, ratings.rater_ids))
    r, d, v = ratings.rater_ids[order], ratings.dimension_ids[order], ratings.values[order]
    new = np.ones(r.size, dtype=np.bool_)
    if r.size:
        new[1:] = (r[1:] != r[:-1]) | (d[1:] != d[:-1]) | (v[1:] != v[:-1])
    starts = np.flatnonzero(new)
    return ValueGroups(
        rater_ids=r[starts],
        dimension_ids=d[starts],
        values=v[starts],
        counts=np.diff(np.r_[starts, r.size]).astype(np.int64),
    )


@dataclass(frozen=True, eq=False)
class RaterLeniency:
    """How much above the population each rater rates, per dimension (see
    :func:`rater_leniency`).

    Attributes
    ----------
    rater_ids : (r,) int64, sorted, unique
    bias : (r, d) float64, finite (columns = dimensions by id)
    """

    rater_ids: npt.NDArray[np.int64]
    bias: npt.NDArray[np.float64]


def rater_leniency(
    groups: ValueGroups,
    dimensions: RatingDimensions,
    params: RatingParams,
    global_means: npt.NDArray[np.float64],
) -> RaterLeniency:
    """Each rater's leniency per dimension, shrunk towards 0 like the profiles' means::

        b_rd = (Σ_j v_rjd - n_rd g_d) / (n_rd + m)      (0 for a dimension r never rated)

    over the rater's valid ratings on ``d``, ``m = prior_weight``. A rater who rates
    everyone 9 on a scale where the population's mean is 6 has ``b`` near 3: their 9 says
    less than a strict rater's. The sums run over ``groups`` in their (rater, dimension,
    value) order, so any run given the same groups gets bit-identical biases.
    """
    n_dims = len(dimensions.dimension_ids)
    global_means = _check_global_means(global_means, n_dims)
    positions, found = validate.lookup(dimensions.dimension_ids, groups.dimension_ids)
    if not found.all():
        raise ValueError("groups hold dimension ids missing from dimensions")
    rater_ids, rows = np.unique(groups.rater_ids, return_inverse=True)
    cells = rows.reshape(-1) * n_dims + positions
    size = rater_ids.size * n_dims
    counts = np.bincount(cells, weights=groups.counts, minlength=size)
    sums = np.bincount(cells, weights=groups.counts * groups.values, minlength=size)
    g = np.tile(global_means, rater_ids.size)
    bias = (sums - counts * g) / (counts + float(params.prior_weight))
    bias = np.where(counts > 0, bias, 0.0)  # m = 0 and no rating: no leniency known
    return RaterLeniency(rater_ids=rater_ids.astype(np.int64), bias=bias.reshape(-1, n_dims))


def without_leniency(
    ratings: ValidRatings, leniency: RaterLeniency, dimensions: RatingDimensions
) -> ValidRatings:
    """``ratings`` with each value less its rater's leniency on its dimension, clipped to
    the dimension's scale (a rater not in ``leniency`` counts as 0)."""
    if leniency.rater_ids.size == 0:
        return ratings
    positions = _dimension_positions(ratings, dimensions)
    rows, found = validate.lookup(leniency.rater_ids, ratings.rater_ids)
    bias = np.where(found, leniency.bias[rows, positions], 0.0)
    values = np.clip(
        ratings.values - bias, dimensions.scale_min[positions], dimensions.scale_max[positions]
    )
    return dataclasses.replace(ratings, values=values)


def rating_aggregates(
    profile_ids: npt.NDArray[np.int64],
    ratings: ValidRatings,
    dimensions: RatingDimensions,
    params: RatingParams,
    global_means: npt.NDArray[np.float64],
) -> RatingAggregates:
    """Count, mean, shrunk mean and quality for the requested profiles.

    Parameters
    ----------
    profile_ids : (n,) int64, unique
        Profiles to aggregate, in output order; ratings of other profiles are ignored.
    ratings : ValidRatings
    dimensions : RatingDimensions
    params : RatingParams
    global_means : (d,) float64
        From :func:`rating_global_means` over the whole population.

    Returns
    -------
    RatingAggregates
        Formulas in the module docstring. A profile without ratings has
        ``counts`` 0, ``shrunk_means == global_means`` and the matching quality.
    """
    profile_ids = validate.as_ids("profile_ids", profile_ids)
    validate.check_unique("profile_ids", profile_ids)
    positions = _dimension_positions(ratings, dimensions)
    n_dims = len(dimensions.dimension_ids)
    order = np.argsort(profile_ids, kind="stable")
    profile_pos, in_scope = validate.lookup(profile_ids[order], ratings.rated_ids)
    cells = order[profile_pos[in_scope]] * n_dims + positions[in_scope]
    size = len(profile_ids) * n_dims
    counts = np.bincount(cells, minlength=size).reshape(len(profile_ids), n_dims)
    sums = np.bincount(cells, weights=ratings.values[in_scope], minlength=size).reshape(
        len(profile_ids), n_dims
    )
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return RatingAggregates.from_counts_means(
        profile_ids, counts.astype(np.int64), means, global_means, dimensions, params
    )


def rating_preferences(
    rater_ids: npt.NDArray[np.int64],
    ratings: ValidRatings,
    aggregates: RatingAggregates,
    dimensions: RatingDimensions,
    params: RatingParams,
) -> RatingPreferences:
    """Taste direction over dimensions for each requested rater.

    Parameters
    ----------
    rater_ids : (r,) int64, unique
        Raters to compute, in output order; other raters' rows are ignored.
    ratings : ValidRatings
    aggregates : RatingAggregates
        Population aggregates of (at least) the profiles these raters rated;
        a rated profile missing from it stands at ``aggregates.global_means``.
    dimensions : RatingDimensions
    params : RatingParams

    Returns
    -------
    RatingPreferences
        Formula in the module docstring; ``vectors`` finite, unit rows.
    """
    rater_ids = validate.as_ids("rater_ids", rater_ids)
    validate.check_unique("rater_ids", rater_ids)
    n_dims = len(dimensions.dimension_ids)
    if aggregates.shrunk_means.shape[1] != n_dims:
        raise ValueError(
            f"aggregates must have {n_dims} dimension columns; "
            f"got {aggregates.shrunk_means.shape[1]}"
        )
    positions = _dimension_positions(ratings, dimensions)
    order = np.argsort(rater_ids, kind="stable")
    rater_pos, in_scope = validate.lookup(rater_ids[order], ratings.rater_ids)
    out_rows = order[rater_pos[in_scope]]
    rated = ratings.rated_ids[in_scope]
    liking = (ratings.values[in_scope] - dimensions.scale_min[positions[in_scope]]) / (
        dimensions.ranges[positions[in_scope]]
    )

    # x_uj: one row per (rater, rated profile), averaged over the rated dimensions.
    pair_order = np.lexsort((rated, out_rows))
    out_rows, rated, liking = out_rows[pair_order], rated[pair_order], liking[pair_order]
    new_pair = np.r_[True, (out_rows[1:] != out_rows[:-1]) | (rated[1:] != rated[:-1])]
    starts = np.flatnonzero(new_pair)[: len(out_rows)]  # no rows -> no pairs
    pair_sizes = np.diff(np.r_[starts, len(out_rows)])
    pair_rows = out_rows[starts]
    pair_rated = rated[starts]
    pair_liking = (
        np.add.reduceat(liking, starts) / pair_sizes if len(starts) else np.empty(0, np.float64)
    )

    # y_jd: the rated profile's shrunk standing; the population prior if it has no row.
    agg_order = np.argsort(aggregates.profile_ids, kind="stable")
    agg_pos, agg_found = validate.lookup(aggregates.profile_ids[agg_order], pair_rated)
    shrunk = np.where(
        agg_found[:, None],
        aggregates.shrunk_means[agg_order[agg_pos]] if len(agg_order) else 0.0,
        aggregates.global_means,
    )
    standing = (shrunk - dimensions.scale_min) / dimensions.ranges

    n_raters = len(rater_ids)
    n_rated = np.bincount(pair_rows, minlength=n_raters)
    per_rater = np.maximum(n_rated, 1)
    mean_liking = np.bincount(pair_rows, weights=pair_liking, minlength=n_raters) / per_rater
    centred_liking = pair_liking - mean_liking[pair_rows]
    covariance = np.zeros((n_raters, n_dims), dtype=np.float64)
    for d in range(n_dims):  # a loop over dimensions (a handful), never over users
        mean_standing = (
            np.bincount(pair_rows, weights=standing[:, d], minlength=n_raters) / per_rater
        )
        products = centred_liking * (standing[:, d] - mean_standing[pair_rows])
        covariance[:, d] = np.bincount(pair_rows, weights=products, minlength=n_raters) / per_rater

    enough = n_rated >= params.min_ratings_for_preference
    has_taste = (
        np.max(np.abs(covariance), axis=1) > _ZERO_COVARIANCE
        if n_dims
        else np.zeros(n_raters, dtype=bool)
    )
    normalized, _ = validate.l2_normalize_rows(covariance)
    emitted = enough & has_taste
    return RatingPreferences(
        rater_ids=rater_ids[emitted].copy(),
        vectors=np.ascontiguousarray(normalized[emitted]),
        n_rated=n_rated[emitted].astype(np.int32),
        skipped={
            "too_few_ratings": int((~enough).sum()),
            "zero_preference": int((enough & ~has_taste).sum()),
        },
    )


def rating_fit(
    preference_vectors: npt.NDArray[np.float64],
    candidate_centred: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """How well each candidate matches a rater's taste: ``0.5 + 0.5 * cos(pref, z)``.

    Parameters
    ----------
    preference_vectors : (p, d) float
        The rater's preference per pair (any positive scale; NaN rows mean missing).
    candidate_centred : (p, d) float
        The candidate's ``RatingAggregates.centred`` row per pair.

    Returns
    -------
    fit : (p,) float64
        In ``[0, 1]``, finite; 0.5 where ``valid`` is False.
    valid : (p,) bool
        Both rows finite and non-zero. Where False, the caller applies its
        neutral value.
    """
    for name, array in (
        ("preference_vectors", preference_vectors),
        ("candidate_centred", candidate_centred),
    ):
        if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind != "f":
            raise TypeError(f"{name} must be a 2-D float array; got {_shape(array)}")
    if preference_vectors.shape != candidate_centred.shape:
        raise ValueError(
            "preference_vectors and candidate_centred must have the same shape; got "
            f"{preference_vectors.shape} and {candidate_centred.shape}"
        )
    preferences = preference_vectors.astype(np.float64, copy=False)
    candidates = candidate_centred.astype(np.float64, copy=False)
    finite = np.all(np.isfinite(preferences), axis=1) & np.all(np.isfinite(candidates), axis=1)
    preferences = np.where(finite[:, None], preferences, 0.0)
    candidates = np.where(finite[:, None], candidates, 0.0)
    unit_preferences, has_preference = validate.l2_normalize_rows(preferences)
    unit_candidates, _ = validate.l2_normalize_rows(candidates)
    if preferences.shape[1]:
        distinct = np.max(np.abs(candidates), axis=1) > _ZERO_CENTRED
    else:
        distinct = np.zeros(len(candidates), dtype=bool)
    valid = finite & has_preference & distinct
    cosine = np.clip(np.einsum("ij,ij->i", unit_preferences, unit_candidates), -1.0, 1.0)
    fit = np.where(valid, 0.5 + 0.5 * cosine, 0.5)
    return fit, valid


def reweighted_quality(
    quality: npt.NDArray[np.floating],
    centred: npt.NDArray[np.floating],
    from_weights: npt.NDArray[np.float64],
    to_weights: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Profiles' quality with the dimensions weighted by ``to_weights`` instead.

    Quality is a weighted mean of the standings ``y_d = (s_d - lo_d) / r_d``, which lie in
    [0, 1] (a shrunk mean stays inside its scale), and the centred vector is ``z_d = y_d -
    (g_d - lo_d) / r_d``; so with weights ``w`` summing to 1::

        quality_w = quality_v + z · (w - v)        (clipped to [0, 1] against rounding)

    for the weights ``v`` the given quality was taken with (``1/d`` each for the ratings
    job's, ``RatingAggregates.quality``).

    Parameters
    ----------
    quality : (n,) float
    centred : (n, d) float
        ``RatingAggregates.centred`` rows of the same profiles.
    from_weights, to_weights : (d,) float64, each ≥ 0 and summing to 1

    Returns
    -------
    (n,) float64 in [0, 1]
    """
    q = np.asarray(quality, dtype=np.float64)
    z = np.asarray(centred, dtype=np.float64)
    shift = np.asarray(to_weights, dtype=np.float64) - np.asarray(from_weights, dtype=np.float64)
    if z.ndim != 2 or z.shape != (q.size, shift.size):
        raise ValueError(
            f"centred must be ({q.size}, {shift.size}) for these weights; got {z.shape}"
        )
    return np.clip(q + z @ shift, 0.0, 1.0)


def dimension_weights(names: list[str], weights: dict[str, float]) -> npt.NDArray[np.float64]:
    """(d,) float64: ``weights`` (by dimension name) aligned with ``names`` and normalized
    to sum 1; every dimension alike (``1/d``) when ``weights`` is empty.

    Raises ``ValueError`` naming what is wrong: a name that is not a dimension, a negative
    or non-finite weight, or no weight on any of ``names``.
    """
    d = len(names)
    if not weights:
        return np.full(d, 1.0 / d) if d else np.empty(0)
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(
            f"dimension_weights names {unknown}, which are not rating dimensions "
            f"(the catalogue has {sorted(names)})"
        )
    w = np.asarray([float(weights.get(name, 0.0)) for name in names], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"dimension_weights must be finite, >= 0 and not all 0; got {weights}")
    normalized: npt.NDArray[np.float64] = w / float(w.sum())
    return normalized
