"""Factories for compute/ tests: fixtures returning callables with overridable defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from compute.population import Population

CATALOGUE: dict[int, str] = {
    10: "hiking",
    11: "jazz",
    12: "cooking",
    13: "chess",
    14: "running",
    15: "films",
}

BEHAVIOUR_DIM = 3

USER_DEFAULTS: dict[str, Any] = {
    "gender": 0,
    "seeking": 0b010,  # men
    "age": 30.0,
    "age_min": 25,
    "age_max": 40,
    "max_distance_km": 50.0,
    "lat": 52.52,
    "lon": 13.40,
    "active": True,
    "account_age_days": 100.0,
    "inactive_days": 1.0,
    "quiz": (1.0, 0.0, 0.0, 0.0),
    "interest_vector": (1.0, 0.0, 0.0, 0.0),
    "interests": {10: 0.5, 11: 0.5},
    "rating_quality": 0.6,
    "rating_dims": (0.1, 0.0, -0.1),
    "preference": (1.0, 0.0, 0.0),
    # The likes job's outputs: None = the user has none (too few decisions, or no row).
    "taste": None,
    "appeal": None,
    "like_rate": None,
}


def build_population(
    users: Sequence[Mapping[str, Any]],
    *,
    exclusions: Mapping[int, Sequence[int]] | None = None,
    catalogue: Mapping[int, str] | None = None,
) -> Population:
    """Population from per-user dicts (missing keys take :data:`USER_DEFAULTS`).

    ``quiz``, ``interest_vector``, ``rating_quality``, ``preference`` may be None
    (= missing). ``exclusions`` maps a row to the rows it excluded.
    """
    rows = [{**USER_DEFAULTS, **u} for u in users]
    n = len(rows)
    catalogue = CATALOGUE if catalogue is None else catalogue
    dq = len(USER_DEFAULTS["quiz"])
    di = len(USER_DEFAULTS["interest_vector"])
    nd = len(USER_DEFAULTS["rating_dims"])

    def vectors(key: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        present = np.array([r[key] is not None for r in rows], dtype=bool)
        values = np.array(
            [r[key] if r[key] is not None else (0.0,) * dim for r in rows], dtype=np.float32
        ).reshape(n, dim)
        return values, present

    quiz, has_quiz = vectors("quiz", dq)
    ivec, has_ivec = vectors("interest_vector", di)
    prefs, has_pref = vectors("preference", nd)
    taste, has_taste = vectors("taste", BEHAVIOUR_DIM)
    appeal, has_appeal = vectors("appeal", BEHAVIOUR_DIM)
    interest_lists = [sorted(r["interests"].items()) for r in rows]
    exclusions = exclusions or {}
    excl_lists = [sorted(exclusions.get(i, ())) for i in range(n)]
    return Population(
        user_ids=np.array([r.get("user_id", 1000 + i) for i, r in enumerate(rows)], np.int64),
        gender=np.array([r["gender"] for r in rows], np.int8),
        seeking_mask=np.array([r["seeking"] for r in rows], np.int8),
        age=np.array([r["age"] for r in rows], np.float32),
        age_min=np.array([r["age_min"] for r in rows], np.int16),
        age_max=np.array([r["age_max"] for r in rows], np.int16),
        max_distance_km=np.array([r["max_distance_km"] for r in rows], np.float32),
        lat=np.array([r["lat"] for r in rows], np.float64),
        lon=np.array([r["lon"] for r in rows], np.float64),
        active=np.array([r["active"] for r in rows], bool),
        account_age_days=np.array([r["account_age_days"] for r in rows], np.float32),
        inactive_days=np.array([r["inactive_days"] for r in rows], np.float32),
        quiz_vectors=quiz,
        has_quiz=has_quiz,
        interest_vectors=ivec,
        has_interest=has_ivec,
        interest_indptr=np.cumsum([0] + [len(x) for x in interest_lists]).astype(np.int64),
        interest_ids=np.array([i for x in interest_lists for i, _ in x], np.int64),
        interest_weights=np.array([w for x in interest_lists for _, w in x], np.float32),
        catalogue_interest_ids=np.array(list(catalogue), np.int64),
        catalogue_interest_names=np.array(list(catalogue.values()), dtype=object),
        rating_quality=np.array(
            [r["rating_quality"] if r["rating_quality"] is not None else 0.0 for r in rows],
            np.float32,
        ),
        has_rating_quality=np.array([r["rating_quality"] is not None for r in rows], bool),
        rating_dims=np.array([r["rating_dims"] for r in rows], np.float32).reshape(n, nd),
        rating_preferences=prefs,
        has_preference=has_pref,
        excluded_indptr=np.cumsum([0] + [len(x) for x in excl_lists]).astype(np.int64),
        excluded_rows=np.array([j for x in excl_lists for j in x], np.int64),
        like_rate_given=np.array([r["like_rate"] or 0.0 for r in rows], np.float32),
        has_like_rate=np.array([r["like_rate"] is not None for r in rows], bool),
        taste_vectors=taste,
        has_taste=has_taste,
        appeal_vectors=appeal,
        has_appeal=has_appeal,
    )


def random_population(
    n: int,
    rng: np.random.Generator,
    *,
    n_types: int = 12,
    dim: int = 16,
    noise: float = 0.35,
    p_missing: float = 0.1,
    p_no_location: float = 0.1,
    p_exclusion: float = 0.002,
    located_spread_deg: float = 0.6,
    nan_fraction: float = 0.0,
) -> Population:
    """A realistic random population: latent types + noise (clustered vectors).

    Most users are women seeking men and men seeking women; some seek several
    genders; a few are nonbinary. Locations cluster around three cities; some users
    have none. ``nan_fraction`` sprinkles NaN into vectors and ratings.
    """
    gender = rng.choice(3, size=n, p=[0.47, 0.47, 0.06]).astype(np.int8)
    seeking = np.where(gender == 0, 0b010, np.where(gender == 1, 0b001, 0b100))
    broad = rng.random(n) < 0.15
    seeking = np.where(broad, rng.integers(1, 8, size=n), seeking).astype(np.int8)
    age = rng.uniform(18, 65, size=n).astype(np.float32)
    age_min = np.maximum(18, age - rng.uniform(2, 15, size=n)).astype(np.int16)
    age_max = (age + rng.uniform(2, 15, size=n)).astype(np.int16)
    cities = np.array([[52.52, 13.40], [48.14, 11.58], [50.11, 8.68]])
    city = rng.integers(0, len(cities), size=n)
    lat = cities[city, 0] + rng.normal(0, located_spread_deg / 3, size=n)
    lon = cities[city, 1] + rng.normal(0, located_spread_deg / 3, size=n)
    no_loc = rng.random(n) < p_no_location
    lat[no_loc] = np.nan
    lon[no_loc] = np.nan
    max_distance = rng.choice([10.0, 25.0, 50.0, 100.0, 500.0, np.inf], size=n).astype(np.float32)

    def clustered(d: int) -> np.ndarray:
        centers = rng.normal(size=(n_types, d))
        kind = rng.integers(0, n_types, size=n)
        return (centers[kind] + noise * rng.normal(size=(n, d))).astype(np.float32)

    quiz = clustered(dim)
    ivec = clustered(dim)
    has_quiz = rng.random(n) >= p_missing
    has_interest = rng.random(n) >= p_missing
    n_cat = 30
    counts = rng.integers(0, 6, size=n)
    interest_ids = []
    interest_weights = []
    for c in counts:
        ids = np.sort(rng.choice(n_cat, size=c, replace=False)) + 100
        w = rng.random(c) + 0.1
        interest_ids.append(ids)
        interest_weights.append(w / w.sum())
    nd = 4
    rating_dims = rng.normal(0, 0.3, size=(n, nd)).astype(np.float32)
    prefs = rng.normal(0, 1, size=(n, nd)).astype(np.float32)
    excl_counts = rng.binomial(n, p_exclusion, size=n)
    excl = [np.unique(rng.integers(0, n, size=c)) for c in excl_counts]
    rating_quality = rng.random(n).astype(np.float32)
    if nan_fraction > 0:
        for arr in (quiz, ivec, prefs, rating_dims):
            arr[rng.random(n) < nan_fraction, 0] = np.nan
        rating_quality[rng.random(n) < nan_fraction] = np.nan
    pop = Population(
        user_ids=rng.permutation(n).astype(np.int64) * 7 + 1,
        gender=gender,
        seeking_mask=seeking,
        age=age,
        age_min=age_min,
        age_max=age_max,
        max_distance_km=max_distance,
        lat=lat,
        lon=lon,
        active=rng.random(n) < 0.95,
        account_age_days=rng.exponential(120, size=n).astype(np.float32),
        inactive_days=rng.exponential(10, size=n).astype(np.float32),
        quiz_vectors=quiz,
        has_quiz=has_quiz,
        interest_vectors=ivec,
        has_interest=has_interest,
        interest_indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        interest_ids=np.concatenate([*interest_ids, np.empty(0, np.int64)]).astype(np.int64),
        interest_weights=np.concatenate([*interest_weights, np.empty(0)]).astype(np.float32),
        catalogue_interest_ids=np.arange(100, 100 + n_cat - 2, dtype=np.int64),  # 2 unnamed
        catalogue_interest_names=np.array([f"topic{i}" for i in range(n_cat - 2)], dtype=object),
        rating_quality=rating_quality,
        has_rating_quality=rng.random(n) >= p_missing,
        rating_dims=rating_dims,
        rating_preferences=prefs,
        has_preference=rng.random(n) >= p_missing,
        excluded_indptr=np.concatenate([[0], np.cumsum([e.size for e in excl])]).astype(np.int64),
        excluded_rows=np.concatenate([*excl, np.empty(0, np.int64)]).astype(np.int64),
    )
    # The likes job's outputs, drawn last so the draws above stay what they were: taste and
    # appeal of a few latent types (dots mostly within ±1, as the job's reconstructions),
    # some users without either vector or without a like rate.
    taste = 0.3 * clustered(8)
    appeal = 0.3 * clustered(8)
    return dataclasses.replace(
        pop,
        taste_vectors=taste,
        has_taste=rng.random(n) >= 2 * p_missing,
        appeal_vectors=appeal,
        has_appeal=rng.random(n) >= 2 * p_missing,
        like_rate_given=rng.beta(2, 3, size=n).astype(np.float32),
        has_like_rate=rng.random(n) >= p_missing,
    )


@pytest.fixture
def make_population() -> Callable[..., Population]:
    """``make_population(users, exclusions=..., catalogue=...)`` → Population."""
    return build_population


@pytest.fixture
def make_random_population() -> Callable[..., Population]:
    """``make_random_population(n, rng, **overrides)`` → clustered random Population."""
    return random_population


@pytest.fixture
def four_users(make_population: Callable[..., Population]) -> Population:
    """Hand-checkable: only rows 0 (woman seeking men) and 1 (man seeking women) match.

    Row 2 is a man seeking men (gender fails with 0 and 1 both ways); row 3 is a
    woman seeking men but out of row 1's age range (and row 1 out of hers).
    """
    return make_population(
        [
            {"user_id": 1, "gender": 0, "seeking": 0b010, "age": 30},
            {"user_id": 2, "gender": 1, "seeking": 0b001, "age": 32, "lat": 52.60},
            {"user_id": 3, "gender": 1, "seeking": 0b010, "age": 31},
            {"user_id": 4, "gender": 0, "seeking": 0b010, "age": 50, "age_min": 45},
        ]
    )
