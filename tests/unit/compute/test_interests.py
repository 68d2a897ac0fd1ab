"""Interests: normalization, IDF, vectors, projection and pairwise overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import interests

LN2 = math.log(2.0)


def make_catalogue() -> interests.InterestCatalogue:
    return interests.InterestCatalogue(
        interest_ids=np.array([7, 5, 6], dtype=np.int64),
        subject_ids=np.array([2, 1, 1], dtype=np.int64),
    )


def normalized_fixture() -> interests.NormalizedInterests:
    # A: 5 (no explicit weight -> 1), 6 (3)   => 0.25, 0.75
    # B: 6 (1), 7 (1)                         => 0.5, 0.5
    # C: 6 (2)                                => 1.0
    return interests.normalize_interests(
        np.array([1, 1, 2, 2, 3], dtype=np.int64),
        np.array([5, 6, 7, 6, 6], dtype=np.int64),
        np.array([np.nan, 3.0, 1.0, 1.0, 2.0]),
        make_catalogue(),
    )


def index_fixture() -> interests.InterestIndex:
    rows = normalized_fixture()
    return interests.InterestIndex.from_rows(
        rows.user_ids, rows.interest_ids, rows.subject_ids, rows.weights
    )


def test_normalize_matches_hand_computation() -> None:
    rows = normalized_fixture()
    np.testing.assert_array_equal(rows.user_ids, [1, 1, 2, 2, 3])
    np.testing.assert_array_equal(rows.interest_ids, [5, 6, 6, 7, 6])
    np.testing.assert_array_equal(rows.subject_ids, [1, 1, 1, 2, 1])
    np.testing.assert_allclose(rows.weights, [0.25, 0.75, 0.5, 0.5, 1.0])
    assert all(count == 0 for count in rows.skipped.values())


@pytest.mark.parametrize(
    ("interest", "weight", "reason"),
    [
        (99, 1.0, "unknown_interest"),
        (6, -1.0, "bad_weight"),
        (6, float("inf"), "bad_weight"),
        (6, 0.0, "zero_weight"),
        (5, 9.0, "duplicate_interest"),  # the earlier row for 5 is dropped, this one kept
    ],
)
def test_each_bad_row_is_skipped_and_counted(interest: int, weight: float, reason: str) -> None:
    rows = interests.normalize_interests(
        np.array([1, 1], dtype=np.int64),
        np.array([5, interest], dtype=np.int64),
        np.array([1.0, weight]),
        make_catalogue(),
    )
    assert rows.skipped[reason] == 1
    assert sum(rows.skipped.values()) == 1
    np.testing.assert_allclose(rows.weights, [1.0])


def test_weights_sum_to_one_even_for_huge_weights() -> None:
    rows = interests.normalize_interests(
        np.array([1, 1, 1], dtype=np.int64),
        np.array([5, 6, 7], dtype=np.int64),
        np.array([1e308, 1e308, 1e308]),
        make_catalogue(),
    )
    np.testing.assert_allclose(rows.weights, [1 / 3, 1 / 3, 1 / 3])


def test_idf_matches_hand_computation() -> None:
    # N = 3 users; df(5) = 1, df(6) = 3, df(7) = 1.
    idf = interests.interest_idf(index_fixture(), make_catalogue())
    np.testing.assert_allclose(idf, [math.log(4 / 2) + 1, 1.0, math.log(4 / 2) + 1])


def test_identity_placement_vectors_match_hand_computation() -> None:
    index = index_fixture()
    catalogue = make_catalogue()
    params = interests.InterestParams(dim=4, projection_seed=0, use_idf=True)
    result = interests.interest_vectors(
        np.array([3, 1, 2, 4], dtype=np.int64),
        index,
        catalogue,
        params,
        interests.interest_idf(index, catalogue),
    )
    a = np.array([0.25 * (1 + LN2), 0.75, 0.0, 0.0])
    b = np.array([0.0, 0.5, 0.5 * (1 + LN2), 0.0])
    expected = np.array([[0.0, 1.0, 0.0, 0.0], a / np.linalg.norm(a), b / np.linalg.norm(b)])
    np.testing.assert_array_equal(result.user_ids, [3, 1, 2])
    np.testing.assert_allclose(result.vectors, expected, rtol=1e-6)
    assert result.vectors.dtype == np.float32 and result.vectors.flags.c_contiguous
    np.testing.assert_array_equal(result.n_interests, [1, 2, 2])
    assert result.skipped == {"unknown_interest": 0, "no_interests": 1, "zero_vector": 0}


def test_vectors_without_idf() -> None:
    params = interests.InterestParams(dim=3, projection_seed=0, use_idf=False)
    result = interests.interest_vectors(
        np.array([1], dtype=np.int64), index_fixture(), make_catalogue(), params, None
    )
    np.testing.assert_allclose(
        result.vectors, [[0.25 / np.hypot(0.25, 0.75), 0.75 / np.hypot(0.25, 0.75), 0]], rtol=1e-6
    )


def test_idf_argument_must_agree_with_params() -> None:
    index, catalogue = index_fixture(), make_catalogue()
    ids = np.array([1], dtype=np.int64)
    with pytest.raises(ValueError, match="idf is required"):
        interests.interest_vectors(
            ids, index, catalogue, interests.InterestParams(3, 0, use_idf=True), None
        )
    with pytest.raises(ValueError, match="idf must be None"):
        interests.interest_vectors(
            ids, index, catalogue, interests.InterestParams(3, 0, use_idf=False), np.ones(3)
        )
    with pytest.raises(ValueError, match=r"idf must be \(3,\)"):
        interests.interest_vectors(
            ids, index, catalogue, interests.InterestParams(3, 0, use_idf=True), np.ones(2)
        )


def test_single_user_with_population_idf_equals_batch_row() -> None:
    index, catalogue = index_fixture(), make_catalogue()
    idf = interests.interest_idf(index, catalogue)
    params = interests.InterestParams(dim=2, projection_seed=11, use_idf=True)
    batch = interests.interest_vectors(np.array([1, 2, 3]), index, catalogue, params, idf)
    single_rows = index_fixture()
    only_b = single_rows.rows_of(np.array([2]))[0]
    start, stop = single_rows.indptr[only_b], single_rows.indptr[only_b + 1]
    single_index = interests.InterestIndex.from_rows(
        np.full(stop - start, 2, dtype=np.int64),
        single_rows.interest_ids[start:stop],
        single_rows.subject_ids[start:stop],
        single_rows.weights[start:stop],
    )
    single = interests.interest_vectors(np.array([2]), single_index, catalogue, params, idf)
    np.testing.assert_array_equal(single.vectors[0], batch.vectors[1])


def large_catalogue(order: np.ndarray) -> interests.InterestCatalogue:
    interest_ids = (np.arange(50, dtype=np.int64) * 37 + 1000)[order]
    return interests.InterestCatalogue(interest_ids, interest_ids // 100)


def test_projection_is_deterministic_and_independent_of_catalogue_order() -> None:
    params = interests.InterestParams(dim=8, projection_seed=42, use_idf=False)
    forward = large_catalogue(np.arange(50))
    shuffled = large_catalogue(np.random.default_rng(3).permutation(50))
    columns, signs = interests.interest_placement(forward, params)
    again_columns, again_signs = interests.interest_placement(shuffled, params)
    np.testing.assert_array_equal(columns, again_columns)
    np.testing.assert_array_equal(signs, again_signs)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert columns.min() >= 0 and columns.max() < 8
    # An interest's placement depends only on its id and the seed.
    subset = interests.InterestCatalogue(forward.interest_ids[::3], forward.subject_ids[::3])
    sub_columns, sub_signs = interests.interest_placement(subset, params)
    np.testing.assert_array_equal(sub_columns, columns[::3])
    np.testing.assert_array_equal(sub_signs, signs[::3])
    other_seed = interests.InterestParams(dim=8, projection_seed=43, use_idf=False)
    assert not np.array_equal(interests.interest_placement(forward, other_seed)[0], columns)


def test_projected_vectors_are_independent_of_input_row_order() -> None:
    rng = np.random.default_rng(5)
    catalogue = large_catalogue(np.arange(50))
    user_ids = rng.integers(0, 10, 200)
    interest_ids = rng.choice(catalogue.interest_ids, 200)
    weights = rng.random(200) + 0.1
    user_ids, interest_ids = np.unique(np.c_[user_ids, interest_ids], axis=0).T
    weights = weights[: len(user_ids)]
    params = interests.InterestParams(dim=8, projection_seed=9, use_idf=True)

    def vectors(order: np.ndarray) -> np.ndarray:
        rows = interests.normalize_interests(
            user_ids[order], interest_ids[order], weights[order], catalogue
        )
        index = interests.InterestIndex.from_rows(
            rows.user_ids, rows.interest_ids, rows.subject_ids, rows.weights
        )
        idf = interests.interest_idf(index, catalogue)
        return interests.interest_vectors(np.arange(10), index, catalogue, params, idf).vectors

    first = vectors(np.arange(len(user_ids)))
    np.testing.assert_array_equal(first, vectors(rng.permutation(len(user_ids))))
    np.testing.assert_array_equal(first, vectors(np.arange(len(user_ids))))
    assert np.all(np.isfinite(first))


def test_overlap_matches_hand_computation() -> None:
    index = index_fixture()
    # rows: A=0, B=1, C=2.  A.B share 6: min(0.75, 0.5); A.C share 6: min(0.75, 1).
    a = np.array([0, 1, 0, 2, 0, -1, 1], dtype=np.int64)
    b = np.array([1, 0, 2, 0, 0, 1, -1], dtype=np.int64)
    overlap, has_both = interests.interest_overlap(index, a, b)
    np.testing.assert_allclose(overlap, [0.5, 0.5, 0.75, 0.75, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(has_both, [True] * 5 + [False] * 2)


def test_shared_interests_top_n_by_min_weight() -> None:
    index = index_fixture()
    ids, weights = interests.shared_interests(
        index, np.array([0, 0, 1, -1]), np.array([0, 1, 1, 2]), 2
    )
    np.testing.assert_array_equal(ids, [[6, 5], [6, -1], [6, 7], [-1, -1]])
    np.testing.assert_allclose(weights, [[0.75, 0.25], [0.5, 0.0], [0.5, 0.5], [0.0, 0.0]])


def test_index_rejects_broken_invariants() -> None:
    ids = np.array([1, 1], dtype=np.int64)
    with pytest.raises(ValueError, match="must be unique"):
        interests.InterestIndex.from_rows(ids, np.array([5, 5]), ids, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        interests.InterestIndex.from_rows(ids, np.array([5, 6]), ids, np.array([np.nan, 0.5]))
    with pytest.raises(ValueError, match=r"rows_a must be rows in \[-1, 3\)"):
        interests.interest_overlap(index_fixture(), np.array([3]), np.array([0]))


index_rows = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.integers(0, 9),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(1e-300, 1e300)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(rows=index_rows, pairs=st.lists(st.tuples(st.integers(-1, 7), st.integers(-1, 7))))
def test_overlap_is_bounded_symmetric_and_matches_a_naive_loop(
    rows: list[tuple[int, int, float]], pairs: list[tuple[int, int]]
) -> None:
    catalogue = interests.InterestCatalogue(np.arange(8, dtype=np.int64), np.zeros(8, np.int64))
    normalized = interests.normalize_interests(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64),
        catalogue,
    )
    assert np.all(np.isfinite(normalized.weights))
    index = interests.InterestIndex.from_rows(
        normalized.user_ids, normalized.interest_ids, normalized.subject_ids, normalized.weights
    )
    n_rows = len(index.user_ids)
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    a = np.where(a >= n_rows, -1, a)
    b = np.where(b >= n_rows, -1, b)
    overlap, has_both = interests.interest_overlap(index, a, b)
    reverse, reverse_has_both = interests.interest_overlap(index, b, a)
    assert np.all(np.isfinite(overlap))
    assert np.all((overlap >= 0.0) & (overlap <= 1.0))
    np.testing.assert_array_equal(overlap, reverse)
    np.testing.assert_array_equal(has_both, reverse_has_both)

    def as_dict(row: int) -> dict[int, float]:
        if row < 0:
            return {}
        span = slice(index.indptr[row], index.indptr[row + 1])
        return dict(
            zip(index.interest_ids[span].tolist(), index.weights[span].tolist(), strict=True)
        )

    for k, (row_a, row_b) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        left, right = as_dict(row_a), as_dict(row_b)
        assert has_both[k] == (bool(left) and bool(right))
        expected = sum(min(left[i], right[i]) for i in left.keys() & right.keys())
        assert overlap[k] == pytest.approx(expected, abs=1e-12)


def test_idf_from_counts_adds_up_across_parts_and_refuses_bad_counts() -> None:
    # users 1,2 hold interest 10; user 3 holds 11: split into two parts and add the counts
    cat = interests.InterestCatalogue(
        interest_ids=np.array([10, 11, 12]), subject_ids=np.array([1, 1, 1])
    )
    whole = interests.InterestIndex.from_rows(
        np.array([1, 2, 3]), np.array([10, 10, 11]), np.ones(3, np.int64), np.ones(3)
    )
    part_a = interests.InterestIndex.from_rows(
        np.array([1]), np.array([10]), np.ones(1, np.int64), np.ones(1)
    )
    part_b = interests.InterestIndex.from_rows(
        np.array([2, 3]), np.array([10, 11]), np.ones(2, np.int64), np.ones(2)
    )
    (df_a, n_a), (df_b, n_b) = (interests.document_frequency(p, cat) for p in (part_a, part_b))
    summed = interests.idf_from_counts(df_a + df_b, n_a + n_b)
    np.testing.assert_array_equal(summed, interests.interest_idf(whole, cat))
    np.testing.assert_allclose(summed, np.log(4 / np.array([3, 2, 1])) + 1)
    with pytest.raises(ValueError, match="document_frequency must be"):
        interests.idf_from_counts(np.array([5]), 3)
