"""The registered pair signals: hand-checked values, missing inputs, and the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference

from compute import signals


def test_quiz_similarity_maps_cosine_to_unit_interval(make_population):
    pop = make_population(
        [{"quiz": (1, 0, 0, 0)}, {"quiz": (0, 2, 0, 0)}, {"quiz": (-3, 0, 0, 0)}, {"quiz": None}]
    )
    values, present = signals.pair_signal(
        pop, "quiz", np.array([0, 0, 0, 0]), np.array([0, 1, 2, 3])
    )
    assert values[:3] == pytest.approx([1.0, 0.5, 0.0])
    assert present.tolist() == [True, True, True, False]
    assert np.isnan(values[3])


def test_interest_overlap_is_sum_of_min_weights_with_top_shared(make_population):
    pop = make_population(
        [
            {"interests": {10: 0.5, 11: 0.3, 12: 0.2}},
            {"interests": {10: 0.1, 11: 0.6, 13: 0.3}},
            {"interests": {}},
        ]
    )
    values, present, shared = signals.interest_overlap(pop, np.array([0, 0]), np.array([1, 2]))
    assert values[0] == pytest.approx(0.1 + 0.3)
    assert shared[0].tolist() == [11, 10, -1]  # by min weight: 0.3 (jazz), 0.1 (hiking)
    assert present.tolist() == [True, False]
    assert np.isnan(values[1])


def test_interest_overlap_of_identical_users_is_one(make_population):
    pop = make_population([{"interests": {10: 0.25, 14: 0.75}}] * 2)
    values, _, shared = signals.interest_overlap(pop, np.array([0]), np.array([1]))
    assert values[0] == pytest.approx(1.0)
    assert shared[0].tolist() == [14, 10, -1]


def test_directional_signals(make_population):
    pop = make_population(
        [
            {"preference": (1, 0, 0), "rating_quality": 0.9, "account_age_days": 0},
            {"rating_dims": (0.5, 0, 0), "rating_quality": None, "account_age_days": 30},
        ]
    )
    a, b = np.array([0, 1]), np.array([1, 0])
    quality, q_present = signals.pair_signal(pop, "rating_quality", a, b)
    assert q_present.tolist() == [False, True]
    assert quality[1] == pytest.approx(0.9)
    fit, _ = signals.pair_signal(pop, "rating_fit", a, b)
    assert fit[0] == pytest.approx(1.0)
    new, _ = signals.pair_signal(
        pop, "newness", a, b, signals.SignalParams(newness_half_life_days=30.0)
    )
    assert new.tolist() == pytest.approx([0.5, 1.0])


def test_proximity_decays_with_distance_and_is_missing_without_location(make_population):
    pop = make_population(
        [{"lat": 0.0, "lon": 0.0}, {"lat": 0.0, "lon": 0.0}, {"lat": np.nan, "lon": np.nan}]
    )
    values, present = signals.pair_signal(pop, "proximity", np.array([0, 0]), np.array([1, 2]))
    assert values[0] == pytest.approx(1.0)
    assert present.tolist() == [True, False]
    # One scale away: 1/e.
    far = signals.distance_decay(np.array([25.0]), signals.SignalParams(proximity_scale_km=25.0))
    assert far[0] == pytest.approx(math.exp(-1))


def test_signals_match_reference_on_random_population(make_random_population):
    pop = make_random_population(60, np.random.default_rng(7), nan_fraction=0.05)
    rng = np.random.default_rng(1)
    a = rng.integers(0, pop.n_users, size=400)
    b = rng.integers(0, pop.n_users, size=400)
    sig = signals.compute_signals(pop, a, b, with_reverse=True)
    assert sig.reverse_values is not None
    for p, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        for direction, values in (
            (reference.signals(pop, x, y), sig.values),
            (reference.signals(pop, y, x), sig.reverse_values),
        ):
            for i, name in enumerate(signals.SIGNAL_NAMES):
                expected = direction[name]
                if expected is None:
                    assert np.isnan(values[p, i]), (p, name)
                else:
                    assert values[p, i] == pytest.approx(expected, abs=1e-5), (p, name)
        shared = [i for i in sig.shared_interest_ids[p].tolist() if i >= 0]
        assert shared == reference.shared_interests(pop, x, y)


def test_signals_are_in_unit_interval_or_nan(make_random_population):
    pop = make_random_population(80, np.random.default_rng(3), nan_fraction=0.2)
    a, b = np.meshgrid(np.arange(80), np.arange(80), indexing="ij")
    values = signals.compute_signals(pop, a.ravel(), b.ravel()).values
    finite = values[~np.isnan(values)]
    assert finite.min() >= 0.0
    assert finite.max() <= 1.0


def test_signal_params_reject_nonpositive_scales():
    with pytest.raises(ValueError, match="proximity_scale_km must be a finite number > 0"):
        signals.SignalParams(proximity_scale_km=0.0)
