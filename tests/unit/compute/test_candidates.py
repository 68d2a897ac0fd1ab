"""Candidate generation: exact blocked ranking equals exhaustive scoring; the FAISS path for
oversized blocks respects the filters, never starves, is deterministic and has recall."""

from __future__ import annotations

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import candidates, filters, scoring

FIXTURE_OK = [HealthCheck.function_scoped_fixture]
EXACT = candidates.CandidateParams(k_quiz=10, k_interest=10, k_fallback=10)
# exact_below=1: every block takes the FAISS neighbour-list path.
FAISS = candidates.CandidateParams(k_quiz=10, k_interest=10, k_fallback=10, exact_below=1)
IVF = candidates.CandidateParams(
    k_quiz=10, k_interest=10, k_fallback=10, exact_below=50, nprobe=8, geo_cell_deg=0.5
)
SCORE = scoring.ScoreParams(top_k=10)


def pool_pairs(pool: candidates.CandidatePool) -> set[tuple[int, int]]:
    return set(zip(pool.user_rows.tolist(), pool.cand_rows.tolist(), strict=True))


def generate(pop, params, rows=None, seed=0):
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(seed))
    rows = np.arange(pop.n_users) if rows is None else rows
    return candidates.generate_candidates(pop, indexes, rows, params, None, SCORE), indexes


def exhaustive(pop, rows, score_params, filter_params=None):
    """Top K of every filter-passing pair by score_pairs (the obviously-correct answer)."""
    everyone = np.arange(pop.n_users)
    users, cands = np.repeat(rows, pop.n_users), np.tile(everyone, rows.size)
    keep, _ = filters.mutual_filter(pop, users, cands, filter_params)
    return scoring.score_pairs(pop, users[keep], cands[keep], score_params)


def test_four_users_only_the_matching_pair(four_users):
    pool, _ = generate(four_users, EXACT)
    assert pool_pairs(pool) == {(0, 1), (1, 0)}
    assert pool.sources.tolist() == [candidates.SOURCE_BITS["block"]] * 2
    assert pool.source_counts == {"quiz": 0, "interest": 0, "fallback": 0, "block": 2}
    faiss_pool, _ = generate(four_users, FAISS)
    assert pool_pairs(faiss_pool) == {(0, 1), (1, 0)}
    assert faiss_pool.sources.tolist() == [0b011, 0b011]  # found by quiz and interest


@settings(max_examples=6, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    seed=st.integers(0, 2**32 - 1),
    geo_cells=st.booleans(),
    reciprocal=st.booleans(),
    fusion=st.sampled_from(scoring.FUSIONS),
    dormancy=st.booleans(),
)
def test_exact_pool_top_k_equals_exhaustive_top_k(
    make_random_population, seed, geo_cells, reciprocal, fusion, dormancy
):
    pop = make_random_population(
        500, np.random.default_rng(seed), p_exclusion=0.01, nan_fraction=0.03
    )
    params = candidates.CandidateParams(geo_cell_deg=0.3 if geo_cells else None)
    score_params = scoring.ScoreParams(
        top_k=25,
        reciprocal=reciprocal,
        fusion=fusion,
        dormancy=dormancy,
        calibration=(
            scoring.Calibration(-3.0, 6.0, 2.0, 0.4) if scoring.is_calibrated(fusion) else None
        ),
    )
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(0))
    rows = np.arange(pop.n_users)
    pool = candidates.generate_candidates(pop, indexes, rows, params, None, score_params)
    assert np.bincount(pool.user_rows).max() <= score_params.top_k + params.margin
    got = scoring.score_pairs(pop, pool.user_rows, pool.cand_rows, score_params)
    want = exhaustive(pop, rows, score_params)
    assert got.user_rows.tolist() == want.user_rows.tolist()
    assert got.cand_rows.tolist() == want.cand_rows.tolist()
    np.testing.assert_array_equal(got.score, want.score)


def test_exposure_cap_enters_the_ranking(make_random_population):
    pop = make_random_population(400, np.random.default_rng(21))
    rows = np.arange(pop.n_users)
    uncapped = scoring.ScoreParams(top_k=15)
    counts = scoring.exposure_counts(exhaustive(pop, rows, uncapped), pop.n_users)
    capped = scoring.ScoreParams(top_k=15, exposure_cap=5, exposure_factor=0.3)
    params = candidates.CandidateParams()
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(0))
    pool = candidates.generate_candidates(
        pop, indexes, rows, params, None, capped, exposure_counts=counts
    )
    got = scoring.score_pairs(pop, pool.user_rows, pool.cand_rows, capped, exposure_counts=counts)
    users = np.repeat(rows, pop.n_users)
    cands = np.tile(rows, pop.n_users)
    keep, _ = filters.mutual_filter(pop, users, cands)
    want = scoring.score_pairs(pop, users[keep], cands[keep], capped, exposure_counts=counts)
    assert (counts > 5).any()
    assert got.cand_rows.tolist() == want.cand_rows.tolist()


def test_users_without_vectors_still_get_candidates(make_population):
    man = {"gender": 1, "seeking": 0b001}
    pop = make_population(
        [
            {"quiz": None},  # interest only
            {"interest_vector": None},  # quiz only
            {"quiz": None, "interest_vector": None},  # neither → fallback
            {**man, "rating_quality": 0.9},
            {**man, "rating_quality": 0.2},
        ]
    )
    exact_pool, _ = generate(pop, EXACT)
    assert {u: exact_pool.cand_rows[exact_pool.user_rows == u].tolist() for u in range(3)} == {
        u: [3, 4] for u in range(3)
    }
    pool, _ = generate(pop, FAISS)
    by_user = {u: pool.sources[pool.user_rows == u].tolist() for u in range(3)}
    assert by_user[0] == [candidates.SOURCE_BITS["interest"]] * 2
    assert by_user[1] == [candidates.SOURCE_BITS["quiz"]] * 2
    assert by_user[2] == [candidates.SOURCE_BITS["fallback"]] * 2
    fallback = next(s for s in pool.source_pairs if s.name == "fallback")
    assert fallback.cand_rows.tolist() == [3, 4]  # higher rating quality first


def test_selective_filter_does_not_starve(make_random_population, make_population):
    # 600 mostly-heterosexual users plus 4 nonbinary users seeking nonbinary users.
    base = make_random_population(600, np.random.default_rng(2), p_no_location=1.0)
    nb = {"gender": 2, "seeking": 0b100, "lat": np.nan, "lon": np.nan, "age": 30}
    extra = make_population([{**nb, "user_id": 10_000 + i} for i in range(4)])
    pop = _concat(base, extra)
    rows = np.arange(base.n_users, pop.n_users)
    for exact_below in (20_000, 50):
        params = candidates.CandidateParams(k_quiz=5, k_interest=5, exact_below=exact_below)
        _check_not_starved(pop, generate(pop, params)[0], rows)


def _check_not_starved(pop, pool, rows):
    for row in rows:
        mine = set(pool.cand_rows[pool.user_rows == row].tolist())
        compatible = {
            int(b)
            for b in range(pop.n_users)
            if reference.first_failing_filter(pop, int(row), b) is None
        }
        # Every other added nonbinary user is found, although only a handful of the
        # 604 users are compatible; nothing incompatible is returned.
        assert set(rows.tolist()) - {int(row)} <= mine <= compatible


def _concat(left, right):
    from dataclasses import fields

    from compute.population import Population

    n = left.n_users
    values = {}
    for f in fields(Population):
        if not f.init:
            continue
        a, b = getattr(left, f.name), getattr(right, f.name)
        if f.name.endswith("indptr"):
            values[f.name] = np.concatenate([a, b[1:] + a[-1]])
        elif f.name == "excluded_rows":
            values[f.name] = np.concatenate([a, b + n])
        elif f.name.startswith("catalogue"):
            values[f.name] = a
        elif f.name in (
            "quiz_vectors",
            "interest_vectors",
            "rating_dims",
            "rating_preferences",
            "taste_vectors",
            "appeal_vectors",
        ):
            width = a.shape[1]
            padded = np.zeros((b.shape[0], width), np.float32)
            padded[:, : min(width, b.shape[1])] = b[:, :width]
            values[f.name] = np.concatenate([a, padded])
        else:
            values[f.name] = np.concatenate([a, b])
    return Population(**values)


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    seed=st.integers(0, 2**32 - 1),
    geo_cells=st.booleans(),
    exact_below=st.sampled_from([40, 20_000]),
)
def test_no_candidate_violates_a_hard_filter(make_random_population, seed, geo_cells, exact_below):
    pop = make_random_population(120, np.random.default_rng(seed), p_exclusion=0.03)
    params = candidates.CandidateParams(
        k_quiz=8,
        k_interest=8,
        k_fallback=8,
        exact_below=exact_below,
        nprobe=4,
        geo_cell_deg=0.3 if geo_cells else None,
    )
    pool, _ = generate(pop, params, seed=seed)
    assert pool.user_rows.size > 0
    for a, b in pool_pairs(pool):
        assert reference.first_failing_filter(pop, a, b) is None
        assert reference.first_failing_filter(pop, b, a) is None


@pytest.mark.parametrize("exact_below", [50, 20_000])
def test_one_user_alone_equals_that_user_in_the_batch(make_random_population, exact_below):
    # exact_below=50 mixes both paths: some rows reach more than 50 candidates (FAISS),
    # others fewer (exact); the path is chosen per row, so it is the same alone.
    pop = make_random_population(500, np.random.default_rng(4), p_exclusion=0.01)
    params = candidates.CandidateParams(
        k_quiz=10,
        k_interest=10,
        k_fallback=10,
        exact_below=exact_below,
        nprobe=8,
        geo_cell_deg=0.5,
    )
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(0))
    batch = candidates.generate_candidates(
        pop, indexes, np.arange(pop.n_users), params, None, SCORE
    )
    for row in range(0, pop.n_users, 25):
        alone = candidates.generate_candidates(pop, indexes, np.array([row]), params, None, SCORE)
        mine = batch.user_rows == row
        assert alone.cand_rows.tolist() == batch.cand_rows[mine].tolist()
        assert alone.sources.tolist() == batch.sources[mine].tolist()


def test_shards_cut_from_the_search_order_equal_one_batch(make_random_population):
    pop = make_random_population(400, np.random.default_rng(6), p_exclusion=0.01)
    params = candidates.CandidateParams(k_quiz=10, k_interest=10, k_fallback=10, geo_cell_deg=0.5)
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(0))
    order = candidates.search_order(pop, indexes)
    assert sorted(order.tolist()) == list(range(pop.n_users))
    # Rows of one query group are adjacent: each group key appears in one run.
    keys = candidates._group_keys(pop, indexes, order)
    runs = keys[np.r_[True, keys[1:] != keys[:-1]]]
    assert runs.size == np.unique(keys).size > 1
    batch = candidates.generate_candidates(
        pop, indexes, np.arange(pop.n_users), params, None, SCORE
    )
    parts = [
        candidates.generate_candidates(
            pop, indexes, np.sort(order[i : i + 70]), params, None, SCORE
        )
        for i in range(0, pop.n_users, 70)
    ]
    together = set().union(*(pool_pairs(part) for part in parts))
    assert together == pool_pairs(batch)
    assert sum(part.user_rows.size for part in parts) == batch.user_rows.size


def test_exact_indexes_equal_exhaustive_search_and_reference(make_random_population):
    pop = make_random_population(150, np.random.default_rng(8), p_exclusion=0.02)
    pool, _ = generate(pop, FAISS)
    rows = np.arange(pop.n_users)
    for source in candidates.VECTOR_SOURCES:
        exact_ids, _ = candidates.exact_candidates(pop, rows, source, 10)
        assert np.array_equal(pool.source_table(source, 10), exact_ids)
        for row in range(0, pop.n_users, 10):
            got = [int(c) for c in exact_ids[row] if c >= 0]
            assert got == reference.exact_neighbours(pop, row, source, 10)


def test_geo_partitioning_loses_nothing(make_random_population):
    pop = make_random_population(400, np.random.default_rng(9))
    for exact_below in (20_000, 1):
        flat, _ = generate(
            pop,
            candidates.CandidateParams(
                k_quiz=10, k_interest=10, k_fallback=10, exact_below=exact_below
            ),
        )
        cells = candidates.CandidateParams(
            k_quiz=10, k_interest=10, k_fallback=10, geo_cell_deg=0.2, exact_below=exact_below
        )
        gridded, indexes = generate(pop, cells)
        assert indexes.n_partitions > 24
        assert pool_pairs(gridded) == pool_pairs(flat)


def test_indexes_round_trip_through_bytes(make_random_population):
    pop = make_random_population(300, np.random.default_rng(10))
    pool, indexes = generate(pop, IVF)
    restored = candidates.CandidateIndexes.from_bytes(indexes.to_bytes())
    again = candidates.generate_candidates(pop, restored, np.arange(pop.n_users), IVF, None, SCORE)
    assert pool_pairs(again) == pool_pairs(pool)
    assert restored.geo_cell_deg == IVF.geo_cell_deg


def test_index_building_is_deterministic_for_the_same_rng(make_random_population):
    pop = make_random_population(300, np.random.default_rng(12))
    first, _ = generate(pop, IVF, seed=3)
    second, _ = generate(pop, IVF, seed=3)
    assert pool_pairs(first) == pool_pairs(second)


def test_recall_on_clustered_population_with_ivf(make_random_population):
    # Default-like params scaled down: cohort × 10-year-band partitions of ~100-300
    # vectors use IVF with nlist = 4·√N ≈ 40-70 and nprobe 32 (escalating when the
    # filters leave too few survivors).
    pop = make_random_population(3000, np.random.default_rng(13), p_no_location=1.0)
    params = candidates.CandidateParams(
        k_quiz=50, k_interest=50, k_fallback=10, exact_below=100, nprobe=32, age_band_years=10
    )
    rows = np.arange(0, pop.n_users, 4)
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(0))
    pool = candidates.generate_candidates(
        pop, indexes, rows, params, None, scoring.ScoreParams(top_k=100)
    )
    assert any(
        isinstance(ix, candidates.faiss.IndexIVFFlat) for ix in indexes.source("quiz").indexes
    )
    # Rows reaching fewer than exact_below candidates were ranked exactly instead.
    by_faiss = ~np.isin(rows, pool.source_pairs[-1].user_rows)
    assert by_faiss.mean() > 0.9
    for source in candidates.VECTOR_SOURCES:
        exact_ids, _ = candidates.exact_candidates(pop, rows, source, 50)
        approx = pool.source_table(source, 50)
        assert candidates.recall_at_k(approx[by_faiss], exact_ids[by_faiss]) >= 0.98


HNSW = candidates.CandidateParams(
    k_quiz=50,
    k_interest=50,
    k_fallback=10,
    exact_below=100,
    age_band_years=10,
    ann_index="hnsw",
    hnsw_m=16,
    ef_search=64,
)


def test_recall_on_clustered_population_with_hnsw(make_random_population):
    pop = make_random_population(3000, np.random.default_rng(13), p_no_location=1.0)
    rows = np.arange(0, pop.n_users, 4)
    indexes = candidates.build_indexes(pop, HNSW, np.random.default_rng(0))
    pool = candidates.generate_candidates(
        pop, indexes, rows, HNSW, None, scoring.ScoreParams(top_k=100)
    )
    kinds = {type(ix) for ix in indexes.source("quiz").indexes if ix is not None}
    assert candidates.faiss.IndexHNSWFlat in kinds
    assert not any(issubclass(kind, candidates.faiss.IndexIVF) for kind in kinds)
    by_faiss = ~np.isin(rows, pool.source_pairs[-1].user_rows)
    assert by_faiss.mean() > 0.9
    for source in candidates.VECTOR_SOURCES:
        exact_ids, _ = candidates.exact_candidates(pop, rows, source, 50)
        approx = pool.source_table(source, 50)
        assert candidates.recall_at_k(approx[by_faiss], exact_ids[by_faiss]) >= 0.98


def test_hnsw_lists_do_not_starve_and_round_trip(make_random_population, make_population):
    base = make_random_population(600, np.random.default_rng(2), p_no_location=1.0)
    nb = {"gender": 2, "seeking": 0b100, "lat": np.nan, "lon": np.nan, "age": 30}
    extra = make_population([{**nb, "user_id": 10_000 + i} for i in range(4)])
    pop = _concat(base, extra)
    params = candidates.CandidateParams(
        k_quiz=5, k_interest=5, exact_below=10, ann_index="hnsw", hnsw_m=8, ef_search=8
    )
    pool, indexes = generate(pop, params)
    assert any(isinstance(ix, candidates.faiss.IndexHNSWFlat) for ix in indexes.sources[0].indexes)
    _check_not_starved(pop, pool, np.arange(base.n_users, pop.n_users))
    restored = candidates.CandidateIndexes.from_bytes(indexes.to_bytes())
    again = candidates.generate_candidates(
        pop, restored, np.arange(pop.n_users), params, None, SCORE
    )
    assert pool_pairs(again) == pool_pairs(pool)


def test_reach_counts_decide_the_path(make_random_population):
    pop = make_random_population(800, np.random.default_rng(21), p_no_location=0.1)
    params = candidates.CandidateParams(
        k_quiz=10, k_interest=10, k_fallback=10, exact_below=120, geo_cell_deg=0.5
    )
    indexes = candidates.build_indexes(pop, params, np.random.default_rng(0))
    rows = np.arange(pop.n_users)
    reach = candidates.reach_counts(pop, indexes, rows)
    assert reach.shape == (pop.n_users,) and reach.dtype == np.int64
    # Every filter-passing candidate lies in the partitions a row searches.
    for row in rows[::40]:
        passing = sum(
            reference.first_failing_filter(pop, int(row), b) is None for b in range(pop.n_users)
        )
        assert passing <= reach[row]
    pool = candidates.generate_candidates(pop, indexes, rows, params, None, SCORE)
    exact_rows = np.unique(pool.source_pairs[-1].user_rows)
    assert (reach[exact_rows] < params.exact_below).all()
    assert (reach[np.setdiff1d(rows, exact_rows)] >= params.exact_below).sum() > 0


def test_flat_below_keeps_small_partitions_exact_on_the_faiss_path(make_random_population):
    pop = make_random_population(600, np.random.default_rng(23), p_no_location=1.0)
    params = candidates.CandidateParams(
        k_quiz=20, k_interest=20, k_fallback=10, exact_below=1, flat_below=10**6, nprobe=1
    )
    rows = np.arange(pop.n_users)
    pool, indexes = generate(pop, params)
    quiz = [ix for ix in indexes.source("quiz").indexes if ix is not None]
    assert quiz and all(isinstance(ix, candidates.faiss.IndexFlatIP) for ix in quiz)
    assert pool.source_counts["block"] == 0  # every row took the neighbour lists
    exact_ids, _ = candidates.exact_candidates(pop, rows, "quiz", 20)
    assert candidates.recall_at_k(pool.source_table("quiz", 20), exact_ids) == 1.0
    with pytest.raises(ValueError, match="flat_below"):
        candidates.CandidateParams(flat_below=0)


def test_ann_index_must_be_known():
    with pytest.raises(ValueError, match="ann_index must be one of"):
        candidates.CandidateParams(ann_index="lsh")
    with pytest.raises(ValueError, match="hnsw_m"):
        candidates.CandidateParams(hnsw_m=1)


def test_recall_at_k_counts_found_exact_neighbours():
    approx = np.array([[1, 2, -1], [4, 5, 6]])
    exact = np.array([[1, 3, -1], [4, 5, 6]])
    assert candidates.recall_at_k(approx, exact) == pytest.approx(4 / 5)
    assert candidates.recall_at_k(np.full((1, 2), -1), np.full((1, 2), -1)) == 1.0


def test_bad_arguments_raise(four_users):
    indexes = candidates.build_indexes(four_users, EXACT, np.random.default_rng(0))
    with pytest.raises(ValueError, match="query_rows must be distinct"):
        candidates.generate_candidates(four_users, indexes, np.array([0, 0]))
    with pytest.raises(ValueError, match=r"query_rows must be in \[0, 4\)"):
        candidates.generate_candidates(four_users, indexes, np.array([7]))
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        candidates.build_indexes(four_users, EXACT, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe must be an int"):
        candidates.CandidateParams(nprobe=0)


def test_filter_switches_are_honoured(make_population):
    pop = make_population([{}, {"gender": 1, "seeking": 0b001, "active": False}])
    params = filters.FilterParams(require_active=False)
    indexes = candidates.build_indexes(pop, EXACT, np.random.default_rng(0))
    for cand_params in (EXACT, FAISS):
        pool = candidates.generate_candidates(pop, indexes, np.array([0]), cand_params, params)
        # Index membership requires activity: inactive users are never candidates.
        assert pool.cand_rows.size == 0
    far = make_population([{}, {"gender": 1, "seeking": 0b001, "lat": 48.14, "lon": 11.58}])
    indexes = candidates.build_indexes(far, EXACT, np.random.default_rng(0))
    assert candidates.generate_candidates(far, indexes, np.array([0]), EXACT).cand_rows.size == 0
    no_distance = filters.FilterParams(enforce_distance=False)
    pool = candidates.generate_candidates(far, indexes, np.array([0]), EXACT, no_distance)
    assert pool.cand_rows.tolist() == [1]
