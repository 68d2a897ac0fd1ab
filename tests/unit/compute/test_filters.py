"""Hard filters, filter cohorts, and population validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import filters, geo, population

# The factory fixtures are stateless callables, safe to share across examples.
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return a.ravel(), b.ravel()


def test_four_users_only_the_two_compatible_users_match(four_users):
    a, b = all_pairs(4)
    keep, removed = filters.mutual_filter(four_users, a, b)
    kept = {(int(x), int(y)) for x, y in zip(a[keep], b[keep], strict=True)}
    assert kept == {(0, 1), (1, 0)}
    # 4 self; gender: pairs with row 2 (6) and the same-gender women pairs 0-3 (2), plus
    # 1-2 already counted; age: 1-3 and 3-1.
    assert removed == {
        "self": 4,
        "inactive": 0,
        "gender": 8,
        "age": 2,
        "distance": 0,
        "excluded": 0,
    }


def test_counts_go_to_the_first_failing_filter(make_population):
    # Pair fails gender, age and distance at once: only "gender" is counted.
    pop = make_population(
        [
            {"gender": 0, "seeking": 0b001, "age": 30, "lat": 0.0, "lon": 0.0},
            {"gender": 0, "seeking": 0b010, "age": 70, "lat": 40.0, "lon": 40.0},
        ]
    )
    keep, removed = filters.mutual_filter(pop, [0], [1])
    assert not keep[0]
    assert removed["gender"] == 1
    assert sum(removed.values()) == 1


def test_distance_needs_both_limits_and_is_neutral_without_location(make_population):
    far = {"gender": 1, "seeking": 0b001, "lat": 52.52, "lon": 13.40 + 0.5}  # ≈ 34 km east
    pop = make_population(
        [
            {"max_distance_km": 50.0},
            {**far, "max_distance_km": 20.0},
            {**far, "max_distance_km": 100.0},
            {**far, "lat": np.nan, "lon": np.nan, "max_distance_km": 1.0},
        ]
    )
    keep, removed = filters.mutual_filter(pop, [0, 0, 0], [1, 2, 3])
    assert keep.tolist() == [False, True, True]
    assert removed["distance"] == 1


def test_exclusions_apply_in_either_direction(make_population):
    man = {"gender": 1, "seeking": 0b001}
    pop = make_population([{}, man, man, man], exclusions={0: [1], 3: [0]})
    keep, removed = filters.mutual_filter(pop, [0, 0, 0, 1], [1, 2, 3, 0])
    assert keep.tolist() == [False, True, False, False]
    assert removed["excluded"] == 3


def test_inactive_users_are_filtered_and_switch_turns_it_off(make_population):
    pop = make_population([{}, {"gender": 1, "seeking": 0b001, "active": False}])
    assert not filters.mutual_filter(pop, [0], [1])[0][0]
    params = filters.FilterParams(require_active=False)
    assert filters.mutual_filter(pop, [0], [1], params)[0][0]


def test_age_uses_whole_years_inclusive(make_population):
    pop = make_population(
        [
            {"age": 30, "age_min": 25, "age_max": 35},
            {"gender": 1, "seeking": 0b001, "age": 35.9, "age_min": 30, "age_max": 30},
        ]
    )
    assert filters.mutual_filter(pop, [0], [1])[0][0]


def test_bad_arguments_raise_naming_the_argument(four_users):
    with pytest.raises(ValueError, match="a_rows and b_rows must have equal length"):
        filters.mutual_filter(four_users, [0, 1], [1])
    with pytest.raises(ValueError, match=r"b_rows must be in \[0, 4\)"):
        filters.mutual_filter(four_users, [0], [4])
    with pytest.raises(TypeError, match="a_rows must be integer"):
        filters.mutual_filter(four_users, [0.5], [1])


def test_cohort_compatibility_equals_pairwise_gender_test():
    genders = np.repeat(np.arange(3), 8)
    masks = np.tile(np.arange(8), 3)
    cohorts = filters.cohort_keys(genders.astype(np.int8), masks.astype(np.int8))
    for i, j in itertools.product(range(24), repeat=2):
        expected = bool((masks[i] >> genders[j]) & 1) and bool((masks[j] >> genders[i]) & 1)
        assert filters.cohorts_compatible(cohorts[i], cohorts[j]) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(seed=st.integers(0, 2**32 - 1))
def test_filter_matches_reference_on_random_populations(make_random_population, seed):
    rng = np.random.default_rng(seed)
    pop = make_random_population(30, rng, p_exclusion=0.05)
    a, b = all_pairs(pop.n_users)
    keep, removed = filters.mutual_filter(pop, a, b)
    expected = [
        reference.first_failing_filter(pop, int(x), int(y)) for x, y in zip(a, b, strict=True)
    ]
    assert keep.tolist() == [e is None for e in expected]
    for name in filters.FILTER_ORDER:
        assert removed[name] == expected.count(name)


def test_haversine_known_distance():
    # Berlin → Munich ≈ 504 km.
    d = geo.haversine_km(52.5200, 13.4050, 48.1351, 11.5820)
    assert d == pytest.approx(504.4, abs=1.0)
    assert np.isnan(geo.haversine_km(np.nan, 0.0, 0.0, 0.0))


@settings(max_examples=50, deadline=None)
@given(
    lat=st.floats(-89, 89),
    lon=st.floats(-180, 179.9),
    cell_lat=st.floats(-89, 89),
    cell_lon=st.floats(-180, 179.9),
    frac_lat=st.floats(0, 1),
    frac_lon=st.floats(0, 1),
)
def test_cell_distance_bound_never_exceeds_true_distance(
    lat, lon, cell_lat, cell_lon, frac_lat, frac_lon
):
    cell_deg = 1.0
    cell = int(geo.cell_ids(np.array([cell_lat]), np.array([cell_lon]), cell_deg)[0])
    n_lon = 360
    lat0 = (cell // n_lon) - 90.0
    lon0 = (cell % n_lon) - 180.0
    inside_lat, inside_lon = lat0 + frac_lat, lon0 + frac_lon
    bound = geo.min_distance_to_cell_km(np.array([lat]), np.array([lon]), cell, cell_deg)[0]
    assert bound <= geo.haversine_km(lat, lon, inside_lat, inside_lon) + 1e-6


# -- population validation ---------------------------------------------------------


def test_validate_population_flags_bad_rows(make_population):
    pop = make_population(
        [
            {},
            {"age": 15},
            {"age_min": 40, "age_max": 30},
            {"gender": 5},
            {"quiz": (np.nan, 1, 0, 0), "lat": np.nan, "lon": np.nan},
        ]
    )
    keep, counts = population.validate_population(pop)
    assert keep.tolist() == [True, False, False, False, True]
    assert counts["age_out_of_range"] == 1
    assert counts["bad_age_range"] == 1
    assert counts["bad_gender"] == 1
    assert counts["nan_vector"] == 1
    assert counts["no_location"] == 1


def test_clean_population_drops_bad_users_and_nan_vectors(make_population):
    pop = make_population(
        [{}, {"age": 130}, {"quiz": (np.nan, 1, 0, 0)}], exclusions={0: [1, 2], 2: [1]}
    )
    cleaned, kept_rows, _ = population.clean_population(pop)
    assert kept_rows.tolist() == [0, 2]
    assert cleaned.n_users == 2
    assert cleaned.has_quiz.tolist() == [True, False]
    assert not np.isnan(cleaned.quiz_vectors).any()
    # Exclusions to the dropped row vanish; others are renumbered.
    assert cleaned.excluded_indptr.tolist() == [0, 1, 1]
    assert cleaned.excluded_rows.tolist() == [1]


def test_population_rejects_wrong_shapes_and_lossy_dtypes(four_users):
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"age must be \(4,\)"):
        replace(four_users, age=np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="gender must be int8"):
        replace(four_users, gender=np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="excluded_rows must be row indices"):
        replace(four_users, excluded_indptr=np.array([0, 1, 1, 1, 1]), excluded_rows=[9])
