"""Users whose filter fields cannot be honoured are dropped and counted, each under its reason.

Regression (issue 9, item 6): coordinates outside [-90, 90] × [-180, 180], NaN in one of
them or ±inf were counted as ``no_location``, kept, and so escaped every distance limit
(a pair with no location passes the distance filter). A seeking mask of 0 or above 7 and a
negative distance limit were kept too.
"""

from __future__ import annotations

import numpy as np
import pytest

from compute import population

NAN, INF = np.nan, np.inf


def test_location_status_tells_missing_from_invalid() -> None:
    lat = np.array([52.5, NAN, 90.0, -90.0, 90.5, NAN, 10.0, INF, -INF, 10.0, 10.0])
    lon = np.array([13.4, NAN, 180.0, -180.0, 0.0, 10.0, NAN, 0.0, 0.0, 180.1, -INF])
    missing, invalid = population.location_status(lat, lon)
    assert missing.tolist() == [False, True] + [False] * 9
    assert invalid.tolist() == [False, False, False, False] + [True] * 7


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ({"lat": 95.0}, "invalid_location"),
        ({"lat": -90.001}, "invalid_location"),
        ({"lon": 181.0}, "invalid_location"),
        ({"lon": -180.5}, "invalid_location"),
        ({"lat": INF}, "invalid_location"),
        ({"lon": -INF}, "invalid_location"),
        ({"lat": NAN}, "invalid_location"),  # half a location is not "no location"
        ({"lon": NAN}, "invalid_location"),
        ({"max_distance_km": -1.0}, "bad_max_distance"),
        ({"max_distance_km": -INF}, "bad_max_distance"),
        ({"seeking": 0}, "bad_seeking_mask"),
        ({"seeking": 8}, "bad_seeking_mask"),
        ({"seeking": -1}, "bad_seeking_mask"),
        ({"gender": 3}, "bad_gender"),
        ({"gender": -1}, "bad_gender"),
    ],
)
def test_a_bad_user_is_dropped_and_counted_under_its_reason(
    make_population, user: dict[str, float], reason: str
) -> None:
    # The bad user is within 1 km of the others, who would all accept them.
    pop = make_population([{}, user, {"gender": 1, "seeking": 0b001}])
    keep, counts = population.validate_population(pop)
    assert keep.tolist() == [True, False, True]
    assert counts[reason] == 1
    assert sum(counts[r] for r in population.DROP_REASONS) == 1
    assert counts["no_location"] == 0
    cleaned, kept_rows, _ = population.clean_population(pop)
    assert kept_rows.tolist() == [0, 2] and cleaned.n_users == 2


def test_no_location_is_kept_and_valid_edges_pass(make_population) -> None:
    pop = make_population(
        [
            {"lat": NAN, "lon": NAN},
            {"lat": 90.0, "lon": -180.0},
            {"max_distance_km": 0.0},
            {"max_distance_km": NAN},  # no limit
            {"max_distance_km": INF},
            {"seeking": 1},
            {"seeking": 7},
            {"gender": 2},
        ]
    )
    keep, counts = population.validate_population(pop)
    assert keep.all()
    assert counts["no_location"] == 1
    assert all(counts[r] == 0 for r in population.DROP_REASONS)
    cleaned, _, _ = population.clean_population(pop)
    assert cleaned.has_location.tolist() == [False] + [True] * 7


def test_each_dropped_user_counts_once_under_the_first_reason(make_population) -> None:
    pop = make_population(
        [
            {"age": 15, "lat": 200.0},
            {"gender": 7, "seeking": 0, "lat": 200.0},
            {"seeking": 0, "max_distance_km": -5.0, "lat": 200.0},
            {"max_distance_km": -5.0, "lat": 200.0},
            {"lat": 200.0, "lon": NAN},
        ]
    )
    keep, counts = population.validate_population(pop)
    assert not keep.any()
    assert {r: counts[r] for r in population.DROP_REASONS} == {
        "age_out_of_range": 1,
        "bad_age_range": 0,
        "bad_gender": 1,
        "bad_seeking_mask": 1,
        "bad_max_distance": 1,
        "invalid_location": 1,
    }
    assert set(counts) == set(population.VALIDATION_REASONS)
