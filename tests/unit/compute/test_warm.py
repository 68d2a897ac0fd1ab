"""compute.warm: splicing the touched users' fresh rows into a held population gives exactly
the population a whole load of the current data gives (plain arrays, no database)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest
from conftest import BEHAVIOUR_DIM, CATALOGUE

from compute import warm
from compute.population import PER_USER_FIELDS, Population

Pairs = set[tuple[int, int]]


def from_rows(
    make_population: Callable[..., Population],
    users: Iterable[dict[str, Any]],
    pairs: Iterable[tuple[int, int]] = (),
    catalogue: dict[int, str] | None = None,
) -> Population:
    """A population of ``users`` (dicts with ``user_id``) in id order, as a load aligns it,
    with the exclusions ``pairs`` (user ids, either orientation) stored under both ends."""
    rows = sorted(users, key=lambda u: u["user_id"])
    row_of = {u["user_id"]: i for i, u in enumerate(rows)}
    exclusions: dict[int, set[int]] = {}
    for a, b in pairs:
        if a in row_of and b in row_of:
            exclusions.setdefault(row_of[a], set()).add(row_of[b])
            exclusions.setdefault(row_of[b], set()).add(row_of[a])
    return make_population(
        rows, exclusions={k: sorted(v) for k, v in exclusions.items()}, catalogue=catalogue
    )


def random_user(user_id: int, rng: np.random.Generator) -> dict[str, Any]:
    """A user with random values in every field (some signals missing)."""

    def maybe(values: tuple[float, ...]) -> tuple[float, ...] | None:
        return None if rng.random() < 0.2 else values

    chosen = rng.choice(sorted(CATALOGUE), size=int(rng.integers(0, 4)), replace=False)
    weights = rng.random(chosen.size) + 0.1
    interests = {int(i): float(w / weights.sum()) for i, w in zip(chosen, weights, strict=True)}
    return {
        "user_id": user_id,
        "gender": int(rng.integers(0, 3)),
        "seeking": int(rng.integers(1, 8)),
        "age": float(rng.integers(18, 60)),
        "age_min": int(rng.integers(18, 30)),
        "age_max": int(rng.integers(30, 70)),
        "max_distance_km": float(rng.choice([10.0, 50.0, np.inf])),
        "lat": float(rng.uniform(40, 55)),
        "lon": float(rng.uniform(0, 20)),
        "account_age_days": float(rng.uniform(0, 400)),
        "inactive_days": float(rng.uniform(0, 30)),
        "quiz": maybe(tuple(rng.normal(size=4))),
        "interest_vector": maybe(tuple(rng.normal(size=4))),
        "interests": interests,
        "rating_quality": None if rng.random() < 0.2 else float(rng.random()),
        "rating_dims": tuple(rng.normal(size=3)),
        "preference": maybe(tuple(rng.normal(size=3))),
        "taste": maybe(tuple(rng.normal(size=BEHAVIOUR_DIM))),
        "appeal": maybe(tuple(rng.normal(size=BEHAVIOUR_DIM))),
        "like_rate": None if rng.random() < 0.3 else float(rng.random()),
    }


def assert_same(got: Population, want: Population) -> None:
    names = (
        *PER_USER_FIELDS,
        "interest_indptr",
        "interest_ids",
        "interest_weights",
        "catalogue_interest_ids",
        "catalogue_interest_names",
        "excluded_indptr",
        "excluded_rows",
        "excluded_keys",
        "interest_codes",
        "interest_code_ids",
    )
    for name in names:
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert np.array_equal(a, b), name


def test_two_users_one_replaced_one_added_one_removed(make_population) -> None:
    """Hand-checkable: 1 changes its quiz and blocks 3; 2 goes inactive; 4 appears."""
    now = [
        {"user_id": 1, "quiz": (0.0, 1.0, 0.0, 0.0)},
        {"user_id": 3},
        {"user_id": 4, "gender": 1, "seeking": 0b001},
    ]
    old = from_rows(make_population, [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}], {(2, 3)})
    fresh = from_rows(make_population, [now[0], now[2]])
    got = warm.replace_users(old, fresh, [1, 2, 4], np.array([[1, 3]]))
    assert got.user_ids.tolist() == [1, 3, 4]
    assert got.quiz_vectors[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert got.gender.tolist() == [0, 0, 1]
    # 2's block of 3 left with 2; 1's block of 3 is stored under both ends
    assert got.excluded_indptr.tolist() == [0, 1, 2, 2]
    assert got.excluded_rows.tolist() == [1, 0]
    assert_same(got, from_rows(make_population, now, {(1, 3)}))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("who", ["some_join_and_leave", "same_users"])
def test_replace_users_equals_a_whole_load_of_the_current_rows(make_population, seed, who) -> None:
    """Either way a batch goes (users joining and leaving: the general splice; only held
    users changing: rows overwritten in place), the result is a whole load of now."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 400), size=60, replace=False)).tolist()
    if who == "same_users":
        ids = ids[:50]
    now_users = {u: random_user(u, rng) for u in ids[:50]}  # active now
    gone = ids[50:55]  # held, inactive now
    new = ids[55:]  # active now, never held
    for u in new:
        now_users[u] = random_user(u, rng)
    everyone = sorted(now_users)
    now_pairs: Pairs = {
        (int(a), int(b))
        for a, b in rng.choice(ids, size=(40, 2))
        if a != b  # self-exclusions are tested below
    }
    changed = [int(u) for u in rng.choice(ids[:50], size=10, replace=False)]
    touched = sorted({*changed, *gone, *new})
    # What was held: the untouched users as now; the touched ones as they were, their pairs
    # anything at all (the new users absent, the gone ones present).
    held_users = [
        random_user(u, rng) if u in touched else now_users[u] for u in everyone if u not in new
    ]
    held_users += [random_user(u, rng) for u in gone]
    untouched_pairs = {(a, b) for a, b in now_pairs if a not in touched and b not in touched}
    stale_pairs = {(int(a), int(b)) for a, b in rng.choice(touched, size=(15, 2)) if a != b}
    held = from_rows(make_population, held_users, untouched_pairs | stale_pairs)
    fresh = from_rows(make_population, [now_users[u] for u in touched if u in now_users])
    touched_pairs = np.array(
        sorted((a, b) for a, b in now_pairs if a in touched or b in touched), dtype=np.int64
    ).reshape(-1, 2)

    got = warm.replace_users(held, fresh, touched, touched_pairs)

    assert_same(got, from_rows(make_population, now_users.values(), now_pairs))


def test_no_touched_user_returns_an_equal_population(make_population) -> None:
    rng = np.random.default_rng(1)
    users = [random_user(u, rng) for u in (3, 5, 8)]
    pop = from_rows(make_population, users, {(3, 8)})
    empty = from_rows(make_population, [])
    assert_same(warm.replace_users(pop, empty, [], []), pop)


def test_a_fresh_catalogue_replaces_the_held_one(make_population) -> None:
    pop = from_rows(make_population, [{"user_id": 1}, {"user_id": 2}])
    catalogue = {**CATALOGUE, 16: "sailing"}
    fresh = from_rows(make_population, [{"user_id": 2, "interests": {16: 1.0}}], (), catalogue)
    got = warm.replace_users(pop, fresh, [2], [])
    assert got.catalogue_interest_ids.tolist()[-1] == 16
    assert got.interest_ids.tolist() == [10, 11, 16]


def test_a_side_without_any_vector_may_have_another_width(make_population) -> None:
    """A load sizes a vector field by the rows it finds (1 when none): no value, no clash."""
    pop = from_rows(make_population, [{"user_id": 1, "taste": (1.0, 0.0, 0.0)}, {"user_id": 2}])
    fresh = from_rows(make_population, [{"user_id": 2}])  # no taste: width 3 of zeros
    narrow = {name: np.zeros((1, 1), np.float32) for name in ("taste_vectors", "appeal_vectors")}
    fresh = Population(**{**_fields(fresh), **narrow})
    got = warm.replace_users(pop, fresh, [2], [])
    assert got.taste_vectors.shape == (2, 3) and got.has_taste.tolist() == [True, False]
    assert got.appeal_vectors.shape == (2, 3)
    assert warm.incompatible_fields(pop, fresh) == []


def test_vectors_of_two_widths_are_refused(make_population) -> None:
    pop = from_rows(make_population, [{"user_id": 1}, {"user_id": 2}])
    wide = from_rows(make_population, [{"user_id": 2}])
    wide = Population(
        **{
            **_fields(wide),
            "quiz_vectors": np.ones((1, 5), np.float32),
        }
    )
    assert warm.incompatible_fields(pop, wide) == ["quiz_vectors"]
    with pytest.raises(ValueError, match="quiz_vectors"):
        warm.replace_users(pop, wide, [2], [])


def _fields(pop: Population) -> dict[str, Any]:
    names = (
        *PER_USER_FIELDS,
        "interest_indptr",
        "interest_ids",
        "interest_weights",
        "catalogue_interest_ids",
        "catalogue_interest_names",
        "excluded_indptr",
        "excluded_rows",
    )
    return {name: getattr(pop, name) for name in names}


def test_callers_mistakes_are_refused(make_population) -> None:
    pop = from_rows(make_population, [{"user_id": 1}, {"user_id": 2}])
    fresh = from_rows(make_population, [{"user_id": 2}])
    with pytest.raises(ValueError, match="touched_ids"):
        warm.replace_users(pop, fresh, [1], [])
    with pytest.raises(ValueError, match="touched end"):
        warm.replace_users(pop, fresh, [2], [[1, 3]])
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        warm.replace_users(pop, fresh, [2], [[1, 2, 3]])
    unsorted = pop.subset_rows([1, 0])
    with pytest.raises(ValueError, match="strictly increasing"):
        warm.replace_users(unsorted, fresh, [2], [])


def test_take_ids_is_a_load_of_those_users(make_population) -> None:
    rng = np.random.default_rng(4)
    users = [random_user(u, rng) for u in (2, 4, 6, 9)]
    pairs = {(2, 4), (4, 9), (6, 9)}
    pop = from_rows(make_population, users, pairs)
    got = warm.take_ids(pop, [9, 4, 77, 2])  # 77 is held by nobody
    assert_same(got, from_rows(make_population, [users[0], users[1], users[3]], pairs))
    assert warm.take_ids(pop, [2, 4, 6, 9]) is pop


def test_exclusion_id_pairs(make_population) -> None:
    pop = from_rows(make_population, [{"user_id": 5}, {"user_id": 7}, {"user_id": 9}], {(9, 5)})
    assert warm.exclusion_id_pairs(pop).tolist() == [[5, 9], [9, 5]]


def test_sorted_segments_are_kept_and_unsorted_ones_sorted(make_population) -> None:
    """The population skips sorting segments that are in order; it still sorts the others."""
    users = [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}]
    pop = make_population(users, exclusions={0: [2, 1], 2: [0]})
    assert pop.excluded_rows.tolist() == [1, 2, 0]
    pop = make_population(users, exclusions={0: [1, 2], 1: [0], 2: [0]})
    assert pop.excluded_rows.tolist() == [1, 2, 0, 0]


def test_conform_drops_fresh_vectors_of_another_width_and_counts_them(make_population) -> None:
    """As a whole load counts a blob of a minority width: absent, ``bad_vector_blob``."""
    pop = from_rows(make_population, [{"user_id": 1}, {"user_id": 2}])
    odd = from_rows(make_population, [{"user_id": 2}, {"user_id": 3, "rating_quality": None}])
    odd = Population(
        **{
            **_fields(odd),
            "quiz_vectors": np.ones((2, 5), np.float32),
            "rating_dims": np.ones((2, 2), np.float32),
            "rating_preferences": np.ones((2, 2), np.float32),
        }
    )
    fitted, counts = warm.conform(pop, odd)
    # two quiz vectors, one rating quality with its dims, two preferences
    assert counts == {"bad_vector_blob": 5}
    assert fitted.quiz_vectors.shape == (2, 4) and not fitted.has_quiz.any()
    assert not fitted.has_rating_quality.any() and not fitted.rating_quality.any()
    assert fitted.rating_preferences.shape == (2, 3) and not fitted.has_preference.any()
    assert fitted.interest_vectors is odd.interest_vectors  # what fits is kept
    got = warm.replace_users(pop, fitted, [2, 3], [])
    assert got.has_quiz.tolist() == [True, False, False]
    fine = from_rows(make_population, [{"user_id": 2}])
    assert warm.conform(pop, fine) == (fine, {"bad_vector_blob": 0})


def region_columns(rows: list[tuple[float, ...]]) -> warm.RegionColumns:
    """Columns from (id, gender, seeking_mask, latitude, longitude, max_distance_km) rows."""
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return warm.RegionColumns(
        user_ids=table[:, 0].astype(np.int64),
        gender=table[:, 1],
        seeking_mask=table[:, 2],
        latitude=table[:, 3],
        longitude=table[:, 4],
        max_distance_km=table[:, 5],
    )


def test_candidate_region_by_gender_both_ways_and_distance_box() -> None:
    nan = np.nan
    columns = region_columns(
        [
            (1, 0, 0b010, 52.50, 13.40, 10),  # target: a woman seeking men, 10 km
            (2, 1, 0b001, 52.55, 13.45, 50),  # a man seeking women, ~6 km away: in
            (3, 1, 0b010, 52.55, 13.45, 50),  # a man seeking men: out
            (4, 0, 0b010, 52.55, 13.45, 50),  # a woman: out
            (5, 1, 0b001, 53.50, 13.40, 50),  # 111 km north: out
            (6, 1, 0b001, nan, nan, 50),  # no location: in
            (7, nan, 0b001, 52.50, 13.40, 50),  # no gender: out
            (8, 1, nan, 52.50, 13.40, 50),  # seeks nothing known: out
        ]
    )
    assert warm.candidate_region(columns, [1], 100.0).tolist() == [1, 2, 6]
    # the margin widens the box by whole degrees
    assert warm.candidate_region(columns, [1], 100.0, margin_deg=1.0).tolist() == [1, 2, 5, 6]
    # a target not held adds nothing; one without a gender only itself
    assert warm.candidate_region(columns, [99], 100.0).tolist() == []
    assert warm.candidate_region(columns, [7], 100.0).tolist() == [7]


def test_candidate_region_without_a_location_or_limit_takes_every_compatible_user() -> None:
    columns = region_columns(
        [
            (1, 0, 0b010, np.nan, np.nan, 10),
            (2, 1, 0b001, 10.0, 10.0, 50),
            (3, 0, 0b010, 52.5, 13.4, np.inf),  # no limit
            (4, 1, 0b001, -10.0, -10.0, 50),
        ]
    )
    assert warm.candidate_region(columns, [1], 100.0).tolist() == [1, 2, 4]
    assert warm.candidate_region(columns, [3], 100.0).tolist() == [2, 3, 4]
    # a NULL limit is the default one: 100 km reaches neither man
    columns = region_columns([(1, 0, 0b010, 52.5, 13.4, np.nan), (2, 1, 0b001, 10.0, 10.0, 5)])
    assert warm.candidate_region(columns, [1], 100.0).tolist() == [1]
    assert warm.candidate_region(columns, [1], 10_000.0).tolist() == [1, 2]
