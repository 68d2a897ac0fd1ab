"""The configured age bounds decide who is dropped as age_out_of_range."""

from __future__ import annotations

import pytest

from compute import population


def test_configured_age_bounds_drop_users(make_population) -> None:
    pop = make_population(
        [
            {"user_id": 1, "age": 19.5},
            {"user_id": 2, "age": 30},
            {"user_id": 3, "age": 101},
        ]
    )
    keep, counts = population.validate_population(pop)
    assert keep.tolist() == [True, True, True]
    keep, counts = population.validate_population(pop, min_age=21, max_age=100)
    assert keep.tolist() == [False, True, False]
    assert counts["age_out_of_range"] == 2
    cleaned, kept_rows, _ = population.clean_population(pop, min_age=21, max_age=100)
    assert cleaned.user_ids.tolist() == [2] and kept_rows.tolist() == [1]
    with pytest.raises(ValueError, match="min_age must be <= max_age"):
        population.validate_population(pop, min_age=50, max_age=40)
