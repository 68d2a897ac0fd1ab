"""The dense block scorer agrees with score_pairs and masks exactly the mutual hard filters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute import blockscore, filters, scoring, sorting, spread

FIXTURE_OK = [HealthCheck.function_scoped_fixture]
EVERYTHING = 10**6


def compatible_active(pop, row):
    """Every active user of a gender-compatible cohort: what a block may contain."""
    cohorts = filters.cohort_keys(pop.gender, pop.seeking_mask)
    return np.flatnonzero(pop.active & filters.cohorts_compatible(cohorts[row], cohorts))


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    seed=st.integers(0, 2**32 - 1),
    reciprocal=st.booleans(),
    fusion=st.sampled_from(scoring.FUSIONS),
    dormancy=st.booleans(),
    neutral=st.sampled_from([0.5, 0.2]),
)
def test_block_scores_equal_score_pairs_and_pairs_pass_the_filters(
    make_random_population, seed, reciprocal, fusion, dormancy, neutral
):
    pop = make_random_population(
        300, np.random.default_rng(seed), p_exclusion=0.03, nan_fraction=0.05
    )
    params = scoring.ScoreParams(
        reciprocal=reciprocal,
        fusion=fusion,
        dormancy=dormancy,
        neutral=neutral,
        calibration=(
            scoring.Calibration(-3.0, 6.0, 2.0, 0.4) if scoring.is_calibrated(fusion) else None
        ),
    )
    fp = filters.FilterParams()
    for row in range(0, pop.n_users, 7):
        # A tiny chunk budget forces several chunks of query rows.
        block = blockscore.rank_block(
            pop,
            np.array([row]),
            compatible_active(pop, row),
            params,
            fp,
            EVERYTHING,
            chunk_entries=64,
        )
        everyone = np.arange(pop.n_users)
        keep, _ = filters.mutual_filter(pop, np.full(pop.n_users, row), everyone, fp)
        assert sorted(block.cand_rows.tolist()) == everyone[keep].tolist()
        full = dataclasses.replace(params, top_k=EVERYTHING)
        exact = scoring.score_pairs(pop, block.user_rows, block.cand_rows, full)
        by_cand = dict(zip(exact.cand_rows.tolist(), exact.score.tolist(), strict=True))
        want = np.array([by_cand[c] for c in block.cand_rows.tolist()])
        np.testing.assert_allclose(block.score, want, atol=1e-5)
        assert np.isfinite(block.score).all()


def test_rows_chunked_together_equal_rows_alone(make_random_population):
    pop = make_random_population(400, np.random.default_rng(3), p_exclusion=0.02)
    params = scoring.ScoreParams(top_k=20)
    fp = filters.FilterParams()
    women_seeking_men = np.flatnonzero((pop.gender == 0) & (pop.seeking_mask == 0b010))
    cands = compatible_active(pop, int(women_seeking_men[0]))
    together = blockscore.rank_block(pop, women_seeking_men, cands, params, fp, 12)
    for row in women_seeking_men[:40]:
        alone = blockscore.rank_block(pop, np.array([row]), cands, params, fp, 12)
        mine = together.user_rows == row
        assert alone.cand_rows.tolist() == together.cand_rows[mine].tolist()
        assert alone.rank.tolist() == list(range(alone.rank.size))


def test_ties_are_broken_by_the_exposure_spread(make_population):
    """Four identical men: equal scores; the two with the smallest spread keys of
    (user, candidate, seed) are kept, whatever the column order — not the lowest ids
    (issue 11, item 7)."""
    man = {"gender": 1, "seeking": 0b001}
    pop = make_population(
        [
            {},
            {**man, "user_id": 50},
            {**man, "user_id": 20},
            {**man, "user_id": 40},
            {**man, "user_id": 30},
        ]
    )
    params = scoring.ScoreParams(spread_seed=11)
    ids = np.array([50, 20, 40, 30])
    keys = sorting.spread_keys(np.full(4, pop.user_ids[0]), ids, 11)
    expected = ids[np.argsort(keys)][:2].tolist()
    for cands in (np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])):
        block = blockscore.rank_block(pop, np.array([0]), cands, params, filters.FilterParams(), 2)
        assert pop.user_ids[block.cand_rows].tolist() == expected


def test_missing_signals_take_the_neutral_value(make_population):
    man = {"gender": 1, "seeking": 0b001}
    bare = {
        "quiz": None,
        "interests": {},
        "rating_quality": None,
        "preference": None,
        "lat": np.nan,
        "lon": np.nan,
        "account_age_days": np.nan,
    }
    pop = make_population([bare, {**man, **bare}])
    params = scoring.ScoreParams(neutral=0.3)
    block = blockscore.rank_block(
        pop, np.array([0]), np.array([1]), params, filters.FilterParams(), 5
    )
    exact = scoring.score_pairs(pop, np.array([0]), np.array([1]), params)
    assert block.cand_rows.tolist() == [1]
    assert block.score[0] == pytest.approx(exact.score[0], abs=1e-6)
    # Everything missing except rating fit (dims without preference → also missing).
    assert block.score[0] == pytest.approx(0.3, abs=1e-6)


def test_allowed_pairs_restrict_the_block(make_random_population):
    pop = make_random_population(200, np.random.default_rng(5), p_no_location=1.0)
    for row in np.flatnonzero(pop.active):
        cands = compatible_active(pop, int(row))
        full = blockscore.rank_block(
            pop, np.array([row]), cands, scoring.ScoreParams(), filters.FilterParams(), 1000
        )
        if full.cand_rows.size > 4:
            break
    assert full.cand_rows.size > 4
    some = np.sort(full.cand_rows[1::2])
    restricted = blockscore.rank_block(
        pop,
        np.array([row]),
        cands,
        scoring.ScoreParams(),
        filters.FilterParams(),
        1000,
        allowed=(np.zeros(some.size, np.int64), some),
    )
    assert sorted(restricted.cand_rows.tolist()) == some.tolist()


def test_bad_arguments_raise(four_users):
    with pytest.raises(ValueError, match="keep must be an int"):
        blockscore.rank_block(
            four_users,
            np.array([0]),
            np.array([1]),
            scoring.ScoreParams(),
            filters.FilterParams(),
            0,
        )
    with pytest.raises(ValueError, match=r"cand_rows must be in \[0, 4\)"):
        blockscore.rank_block(
            four_users,
            np.array([0]),
            np.array([9]),
            scoring.ScoreParams(),
            filters.FilterParams(),
            3,
        )


def reference_spread(user_id, cand_id, seed):
    """The spread key in plain Python integers (x³ mod P of the mixed ids)."""
    p = spread.SPREAD_PRIME
    mixed = cand_id * spread.SPREAD_CANDIDATE_FACTOR + user_id * spread.SPREAD_USER_FACTOR
    x = (mixed + seed) % p
    return pow(x, 3, p)


def reference_top_per_row(score, rows, row_ids, cand_ids, seed, keep):
    """The straightforward cut: exact keep-th value per row, then a three-key lexsort."""
    n_rows, n_cols = score.shape
    if n_cols > keep:
        threshold = np.partition(score, n_cols - keep, axis=1)[:, n_cols - keep]
    else:
        threshold = np.full(n_rows, -np.inf, dtype=np.float32)
    local, col = np.nonzero(score >= np.maximum(threshold, np.float32(-0.5))[:, None])
    values = score[local, col]
    pairs = zip(row_ids[local].tolist(), cand_ids[col].tolist(), strict=True)
    ties = np.array([reference_spread(u, c, seed) for u, c in pairs], dtype=np.int64)
    order = np.lexsort((ties, -values, local))
    local, col, values = local[order], col[order], values[order]
    first = np.r_[True, local[1:] != local[:-1]] if local.size else np.empty(0, np.bool_)
    rank = np.arange(local.size) - np.maximum.accumulate(np.where(first, np.arange(local.size), 0))
    top = rank < keep
    return rows[local[top]], col[top], values[top], rank[top].astype(np.int32)


def test_top_per_row_and_masking_equal_the_straightforward_cut():
    # Wide rows take the sampled threshold, narrow ones the exact partition; ties (rounded
    # scores), scores sorted along the columns and mostly-masked rows are all covered.
    rng = np.random.default_rng(3)
    for trial in range(200):
        n_rows, n_cols = int(rng.integers(1, 30)), int(rng.integers(1, 3000))
        keep = int(rng.integers(1, 60))
        score = rng.random((n_rows, n_cols), dtype=np.float32)
        if trial % 2:
            score = (np.round(score * rng.integers(1, 20)) / 20).astype(np.float32)
        if trial % 5 == 0:
            score = np.sort(score, axis=1)
        ok = rng.random((n_rows, n_cols)) < rng.random()
        expected_masked = np.where(ok, score, np.float32(-1.0))
        blockscore._mask_cells(score, ok)
        assert (score.view(np.int32) == expected_masked.view(np.int32)).all()
        rows = rng.integers(0, 10**6, n_rows)
        ids = rng.permutation(n_cols) + 1
        row_ids = rows + 7
        seed = int(rng.integers(0, spread.SPREAD_PRIME))
        got = blockscore._top_per_row(score, rows, row_ids, ids, seed, keep)
        want = reference_top_per_row(score, rows, row_ids, ids, seed, keep)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.tolist() == w.tolist(), trial
