"""Ratings: validation, shrunk aggregates, taste preferences and rating fit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compute import ratings

PARAMS = ratings.RatingParams(prior_weight=2.0, min_ratings_for_preference=2)
KNOWN = np.array([1, 2, 3, 4], dtype=np.int64)


def make_dimensions() -> ratings.RatingDimensions:
    # Deliberately unsorted; d1 = id 1 on [1, 5], d2 = id 2 on [0, 10].
    return ratings.RatingDimensions(
        dimension_ids=np.array([2, 1], dtype=np.int64),
        scale_min=np.array([0.0, 1.0]),
        scale_max=np.array([10.0, 5.0]),
    )


# (rater, rated, dimension, value)
GOOD_ROWS = [
    (1, 2, 1, 5.0),
    (1, 2, 2, 10.0),
    (1, 3, 1, 1.0),
    (1, 3, 2, 0.0),
    (4, 2, 1, 3.0),
    (4, 2, 2, 2.0),
    (4, 3, 1, 3.0),
    (4, 3, 2, 8.0),
    (2, 3, 1, 1.0),
]


def validated(rows: list[tuple[int, int, int, float]]) -> ratings.ValidRatings:
    return ratings.validate_ratings(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.int64),
        np.array([r[3] for r in rows], dtype=np.float64),
        make_dimensions(),
        KNOWN,
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((1, 2, 9, 3.0), "unknown_dimension"),
        ((1, 2, 1, 5.5), "out_of_scale"),
        ((1, 2, 1, 0.0), "out_of_scale"),
        ((1, 2, 1, float("nan")), "out_of_scale"),
        ((1, 2, 2, float("inf")), "out_of_scale"),
        ((99, 2, 1, 3.0), "unknown_user"),
        ((1, 99, 1, 3.0), "unknown_user"),
        ((1, 1, 1, 3.0), "self_rating"),
    ],
)
def test_each_bad_row_is_skipped_and_counted(row: tuple[int, int, int, float], reason: str) -> None:
    result = validated([*GOOD_ROWS, row])
    assert result.skipped[reason] == 1
    assert sum(result.skipped.values()) == 1
    assert len(result.values) == len(GOOD_ROWS)


def test_duplicate_rating_keeps_the_last_row() -> None:
    result = validated([(1, 2, 1, 2.0), *GOOD_ROWS])
    assert result.skipped["duplicate_rating"] == 1
    assert len(result.values) == len(GOOD_ROWS)
    kept = (result.rater_ids == 1) & (result.rated_ids == 2) & (result.dimension_ids == 1)
    np.testing.assert_array_equal(result.values[kept], [5.0])


def test_global_means_match_hand_computation() -> None:
    # d1: (5 + 1 + 3 + 3 + 1) / 5 = 2.6; d2: (10 + 0 + 2 + 8) / 4 = 5.
    means = ratings.rating_global_means(validated(GOOD_ROWS), make_dimensions())
    np.testing.assert_allclose(means, [2.6, 5.0])


def test_global_mean_of_an_unrated_dimension_is_the_midpoint() -> None:
    means = ratings.rating_global_means(validated([(1, 2, 1, 5.0)]), make_dimensions())
    np.testing.assert_allclose(means, [5.0, 5.0])


def test_aggregates_match_hand_computation() -> None:
    dims = make_dimensions()
    valid = validated(GOOD_ROWS)
    result = ratings.rating_aggregates(
        np.array([2, 3, 1], dtype=np.int64),
        valid,
        dims,
        PARAMS,
        ratings.rating_global_means(valid, dims),
    )
    # profile 2: d1 n=2 mean 4 -> (8 + 2*2.6)/4 = 3.3;   d2 n=2 mean 6 -> (12 + 10)/4 = 5.5
    # profile 3: d1 n=3 mean 5/3 -> (5 + 5.2)/5 = 2.04;  d2 n=2 mean 4 -> (8 + 10)/4 = 4.5
    # profile 1: unrated -> the global means.
    np.testing.assert_array_equal(result.counts, [[2, 2], [3, 2], [0, 0]])
    np.testing.assert_allclose(result.means[:2], [[4.0, 6.0], [5 / 3, 4.0]])
    assert np.all(np.isnan(result.means[2]))
    np.testing.assert_allclose(result.shrunk_means, [[3.3, 5.5], [2.04, 4.5], [2.6, 5.0]])
    # quality: mean of (s - lo)/range: (0.575 + 0.55)/2, (0.26 + 0.45)/2, (0.4 + 0.5)/2
    np.testing.assert_allclose(result.quality, [0.5625, 0.355, 0.45])
    np.testing.assert_allclose(
        result.centred(dims), [[0.7 / 4, 0.05], [-0.56 / 4, -0.05], [0.0, 0.0]], atol=1e-12
    )
    rows = result.long_rows(dims)
    assert len(rows) == 4 and not rows.isna().any().any()
    assert rows["profile_id"].tolist() == [2, 2, 3, 3]
    assert rows["dimension_id"].tolist() == [1, 2, 1, 2]


def test_single_profile_with_population_means_equals_batch_row() -> None:
    dims = make_dimensions()
    valid = validated(GOOD_ROWS)
    global_means = ratings.rating_global_means(valid, dims)
    batch = ratings.rating_aggregates(np.array([2, 3]), valid, dims, PARAMS, global_means)
    only_3 = validated([row for row in GOOD_ROWS if row[1] == 3])
    single = ratings.rating_aggregates(np.array([3]), only_3, dims, PARAMS, global_means)
    np.testing.assert_array_equal(single.shrunk_means[0], batch.shrunk_means[1])
    np.testing.assert_array_equal(single.quality[0], batch.quality[1])
    # Round trip through the stored (count, mean) columns gives the same numbers.
    stored = ratings.RatingAggregates.from_counts_means(
        batch.profile_ids, batch.counts, batch.means, global_means, dims, PARAMS
    )
    np.testing.assert_array_equal(stored.shrunk_means, batch.shrunk_means)


def test_preferences_match_hand_computation() -> None:
    dims = make_dimensions()
    valid = validated(GOOD_ROWS)
    aggregates = ratings.rating_aggregates(
        np.array([1, 2, 3, 4]), valid, dims, PARAMS, ratings.rating_global_means(valid, dims)
    )
    result = ratings.rating_preferences(np.array([4, 1, 2, 3]), valid, aggregates, dims, PARAMS)
    # standings y: profile 2 = (0.575, 0.55), profile 3 = (0.26, 0.45); centred +-(0.1575, 0.05)
    # rater 1 likes 2 (x = 1) over 3 (x = 0): cx = +-0.5 -> cov = (0.07875, 0.025)
    # rater 4: x(2) = (0.5 + 0.2)/2 = 0.35, x(3) = 0.65: cx = -+0.15 -> cov = -(0.023625, 0.0075)
    rater_1 = np.array([0.07875, 0.025]) / np.hypot(0.07875, 0.025)
    np.testing.assert_array_equal(result.rater_ids, [4, 1])
    np.testing.assert_allclose(result.vectors, [-rater_1, rater_1], rtol=1e-9)
    np.testing.assert_array_equal(result.n_rated, [2, 2])
    # rater 2 rated one profile, rater 3 none.
    assert result.skipped == {"too_few_ratings": 2, "zero_preference": 0}


def test_rater_who_rates_everyone_alike_has_no_preference() -> None:
    dims = make_dimensions()
    rows = [(1, 2, 1, 4.1), (1, 3, 1, 4.1), (1, 4, 1, 4.1), (2, 3, 1, 1.0), (2, 4, 2, 9.0)]
    valid = validated(rows)
    aggregates = ratings.rating_aggregates(
        KNOWN, valid, dims, PARAMS, ratings.rating_global_means(valid, dims)
    )
    result = ratings.rating_preferences(np.array([1]), valid, aggregates, dims, PARAMS)
    assert len(result.rater_ids) == 0
    assert result.skipped == {"too_few_ratings": 0, "zero_preference": 1}


def test_single_rater_with_stored_aggregates_equals_batch_row() -> None:
    dims = make_dimensions()
    valid = validated(GOOD_ROWS)
    aggregates = ratings.rating_aggregates(
        KNOWN, valid, dims, PARAMS, ratings.rating_global_means(valid, dims)
    )
    batch = ratings.rating_preferences(KNOWN, valid, aggregates, dims, PARAMS)
    only_4 = validated([row for row in GOOD_ROWS if row[0] == 4])
    single = ratings.rating_preferences(np.array([4]), only_4, aggregates, dims, PARAMS)
    np.testing.assert_array_equal(single.vectors[0], batch.vectors[batch.rater_ids == 4][0])


def test_rating_fit_matches_hand_values() -> None:
    preferences = np.array([[1.0, 0.0]] * 5 + [[np.nan, 0.0], [0.0, 0.0]])
    candidates = np.array(
        [[0.2, 0.0], [-0.1, 0.0], [0.0, 0.3], [0.1, 0.1], [0.0, 0.0], [0.1, 0.0], [0.1, 0.0]]
    )
    fit, valid = ratings.rating_fit(preferences, candidates)
    half_root2 = 0.5 + 0.5 / np.sqrt(2)
    np.testing.assert_allclose(fit, [1.0, 0.0, 0.5, half_root2, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(valid, [True, True, True, True, False, False, False])


def test_caller_mistakes_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="same shape"):
        ratings.rating_fit(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="min_ratings_for_preference"):
        ratings.RatingParams(prior_weight=1.0, min_ratings_for_preference=1)
    with pytest.raises(ValueError, match="prior_weight"):
        ratings.RatingParams(prior_weight=-1.0, min_ratings_for_preference=2)
    dims = make_dimensions()
    with pytest.raises(ValueError, match=r"global_means must be \(2,\)"):
        ratings.rating_aggregates(
            np.array([1]), validated(GOOD_ROWS), dims, PARAMS, np.array([1.0])
        )


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None)
@given(
    preferences=hnp.arrays(np.float64, (8, 3), elements=finite_or_not),
    candidates=hnp.arrays(np.float64, (8, 3), elements=finite_or_not),
)
def test_rating_fit_is_always_finite_and_bounded(
    preferences: np.ndarray, candidates: np.ndarray
) -> None:
    fit, valid = ratings.rating_fit(preferences, candidates)
    assert np.all(np.isfinite(fit))
    assert np.all((fit >= 0.0) & (fit <= 1.0))
    assert np.all(fit[~valid] == 0.5)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 5),
            st.integers(1, 5),
            st.integers(1, 3),
            st.one_of(finite_or_not, st.floats(0.0, 10.0)),
        ),
        max_size=50,
    ),
    prior_weight=st.floats(0.0, 100.0),
)
def test_aggregates_and_preferences_are_nan_free(
    rows: list[tuple[int, int, int, float]], prior_weight: float
) -> None:
    dims = make_dimensions()
    params = ratings.RatingParams(prior_weight=prior_weight, min_ratings_for_preference=2)
    valid = validated(rows)
    global_means = ratings.rating_global_means(valid, dims)
    aggregates = ratings.rating_aggregates(KNOWN, valid, dims, params, global_means)
    assert np.all(np.isfinite(aggregates.shrunk_means))
    assert np.all((aggregates.quality >= 0) & (aggregates.quality <= 1))
    preferences = ratings.rating_preferences(KNOWN, valid, aggregates, dims, params)
    assert np.all(np.isfinite(preferences.vectors))
    np.testing.assert_allclose(np.linalg.norm(preferences.vectors, axis=1), 1.0)


def test_reweighted_quality_is_the_standing_mean_under_the_new_weights() -> None:
    """Two dimensions on 1-5 and 0-10, g = (3, 5): standings y and centred z = y - (g-lo)/r."""
    y = np.array([[0.75, 0.2], [0.5, 0.5], [1.0, 0.0]])
    z = y - np.array([0.5, 0.5])
    alike = ratings.dimension_weights(["looks", "humour"], {})
    assert alike.tolist() == [0.5, 0.5]
    quality = y.mean(axis=1)
    to = ratings.dimension_weights(["looks", "humour"], {"looks": 3, "humour": 1})
    assert to.tolist() == [0.75, 0.25]
    got = ratings.reweighted_quality(quality, z, alike, to)
    assert got.tolist() == pytest.approx((y @ to).tolist())
    only = ratings.reweighted_quality(quality, z, alike, np.array([0.0, 1.0]))
    assert only.tolist() == pytest.approx(y[:, 1].tolist())
    # back again: from the reweighted quality to equal weights
    back = ratings.reweighted_quality(got, z, to, alike)
    assert back.tolist() == pytest.approx(quality.tolist())


def test_dimension_weights_name_what_is_wrong() -> None:
    assert ratings.dimension_weights(["a", "b"], {"b": 2.0}).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"\['c'\].*not rating dimensions"):
        ratings.dimension_weights(["a", "b"], {"c": 1.0})
    with pytest.raises(ValueError, match="not all 0"):
        ratings.dimension_weights(["a", "b"], {"a": 0.0})
    with pytest.raises(ValueError, match="centred must be"):
        ratings.reweighted_quality(np.zeros(2), np.zeros((2, 3)), np.full(2, 0.5), np.full(2, 0.5))
