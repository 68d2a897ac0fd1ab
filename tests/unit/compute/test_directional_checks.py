"""directional_checks names the failing filter and its direction, and agrees with mutual_filter."""

from __future__ import annotations

import numpy as np

from compute import filters


def checks(pop, a: int, b: int) -> dict[str, tuple[bool, bool]]:
    return {c.name: (c.a_accepts_b, c.b_accepts_a) for c in filters.directional_checks(pop, a, b)}


def test_each_filter_and_direction(make_population) -> None:
    pop = make_population(
        [
            {"user_id": 1, "gender": 0, "seeking": 0b010, "age": 30, "max_distance_km": 5},
            {"user_id": 2, "gender": 1, "seeking": 0b001, "age": 60, "age_min": 18, "age_max": 99},
            {"user_id": 3, "gender": 1, "seeking": 0b010, "age": 31},
            {"user_id": 4, "gender": 1, "seeking": 0b001, "age": 31, "lat": 52.70},
        ],
        exclusions={0: [2]},
    )
    # 2 is 60: outside 1's range (25-40); 1 (30) is inside 2's range (18-99)
    assert checks(pop, 0, 1)["age"] == (False, True)
    # 3 seeks men only: 1 accepts 3's gender, 3 does not accept 1's
    assert checks(pop, 0, 2)["gender"] == (True, False)
    # user 1 excluded user 3 (like/pass/block): only 1's side fails
    assert checks(pop, 0, 2)["excluded"] == (False, True)
    # 4 is ~20 km away: beyond 1's 5 km, within 4's 50 km
    assert checks(pop, 0, 3)["distance"] == (False, True)
    assert checks(pop, 0, 0)["self"] == (False, False)


def test_agrees_with_mutual_filter_on_random_pairs(make_random_population) -> None:
    rng = np.random.default_rng(3)
    pop = make_random_population(120, rng, p_exclusion=0.05)
    for a, b in rng.integers(0, pop.n_users, size=(400, 2)):
        keep, _ = filters.mutual_filter(pop, np.array([a]), np.array([b]))
        result = filters.directional_checks(pop, int(a), int(b))
        assert bool(keep[0]) == all(c.a_accepts_b and c.b_accepts_a for c in result)
