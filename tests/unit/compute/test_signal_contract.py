"""Every registered signal keeps the same contract, checked by one parametrized suite.

A signal added to ``compute.signals.SIGNALS`` is picked up here with no edit: its values
are in [0, 1] or missing, a missing value scores as neutral (and sets its missing bit),
and the dense block path (``blockscore.rank_block``) ranks with the same score as the
pair path (``scoring.score_pairs``) when the signal carries all the weight.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compute import blockscore, filters, scoring, signals

EVERYTHING = 10**6
NEUTRAL = 0.3  # distinct from the default 0.5, so "neutral" is not mistaken for a value
BY_SIGNAL = pytest.mark.parametrize("sig", signals.SIGNALS, ids=signals.SIGNAL_NAMES)


@pytest.fixture
def pop(make_random_population):
    """A small random population in which every signal is missing for some pairs."""
    rng = np.random.default_rng(5)
    base = make_random_population(160, rng, p_exclusion=0.03, nan_fraction=0.1)
    # The random population always knows account ages; make a few unknown.
    age = base.account_age_days.copy()
    age[rng.random(base.n_users) < 0.1] = np.nan
    return dataclasses.replace(base, account_age_days=age)


def all_pairs(pop):
    a, b = np.meshgrid(np.arange(pop.n_users), np.arange(pop.n_users), indexing="ij")
    return a.ravel(), b.ravel()


def test_registry_names_keys_and_reason_codes_are_unique():
    for attribute in ("name", "key", "reason_code"):
        values = [getattr(s, attribute) for s in signals.SIGNALS]
        assert len(set(values)) == len(values), attribute
    # ScoredPairs.missing is one uint8 bit per signal.
    assert len(signals.SIGNALS) <= 8


@BY_SIGNAL
def test_values_are_in_unit_interval_or_missing(pop, sig):
    a, b = all_pairs(pop)
    values, present = signals.pair_signal(pop, sig.name, a, b)
    assert present.tolist() == (~np.isnan(values)).tolist()
    assert present.any() and not present.all(), "the fixture must exercise both cases"
    assert values[present].min() >= 0.0
    assert values[present].max() <= 1.0
    assert sig.weight >= 0
    assert sig.neutral is None or 0.0 <= sig.neutral <= 1.0
    assert 0.0 <= sig.reason_min <= 1.0


@BY_SIGNAL
def test_missing_scores_as_neutral_and_sets_its_bit(pop, sig):
    a, b = all_pairs(pop)
    keep, _ = filters.mutual_filter(pop, a, b)
    a, b = a[keep], b[keep]
    params = scoring.ScoreParams(
        weights=scoring.SignalWeights.only(sig.name),
        neutral=NEUTRAL,
        reciprocal=False,
        top_k=EVERYTHING,
    )
    scored = scoring.score_pairs(pop, a, b, params)
    values, present = signals.pair_signal(pop, sig.name, scored.user_rows, scored.cand_rows)
    bit = signals.index(sig.name)
    missing = (scored.missing >> bit & 1).astype(bool)
    assert missing.tolist() == (~present).tolist()
    assert missing.any() and not missing.all()
    neutral = NEUTRAL if sig.neutral is None else sig.neutral
    subscore = scored.subscore(sig.name)
    np.testing.assert_allclose(subscore[missing], neutral, atol=1e-7)
    np.testing.assert_allclose(subscore[~missing], values[~missing], atol=1e-6)
    # With all the weight on this signal the score is the subscore.
    np.testing.assert_allclose(scored.score, subscore, atol=1e-6)


@BY_SIGNAL
@pytest.mark.parametrize("reciprocal", [False, True])
def test_block_path_scores_as_the_pair_path(make_random_population, sig, reciprocal):
    for seed in (1, 2):
        pop = make_random_population(
            200, np.random.default_rng(seed), p_exclusion=0.03, nan_fraction=0.1
        )
        params = scoring.ScoreParams(
            weights=scoring.SignalWeights.only(sig.name),
            neutral=NEUTRAL,
            reciprocal=reciprocal,
            top_k=EVERYTHING,
        )
        cohorts = filters.cohort_keys(pop.gender, pop.seeking_mask)
        for row in range(0, pop.n_users, 11):
            cands = np.flatnonzero(pop.active & filters.cohorts_compatible(cohorts[row], cohorts))
            block = blockscore.rank_block(
                pop, np.array([row]), cands, params, filters.FilterParams(), EVERYTHING
            )
            exact = scoring.score_pairs(pop, block.user_rows, block.cand_rows, params)
            by_cand = dict(zip(exact.cand_rows.tolist(), exact.score.tolist(), strict=True))
            want = np.array([by_cand[c] for c in block.cand_rows.tolist()])
            np.testing.assert_allclose(block.score, want, atol=1e-5)
