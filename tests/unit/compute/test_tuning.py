"""compute.tuning: the non-negative logistic fit recovers known weights; validation chooses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from compute import scoring, tuning

TRUE = np.array([0.5, 0.3, 0.2, 0.0, 0.0])


def draw(n: int, rng: np.random.Generator, scale: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    features = rng.random((n, TRUE.size))
    logits = scale * (features @ TRUE - 0.5)
    return features, rng.random(n) < special.expit(logits)


def test_fit_recovers_the_normalised_weights_and_zero_for_the_unused():
    features, liked = draw(20_000, np.random.default_rng(0))
    fit = tuning.fit_logistic(features, liked, l2=1e-4)
    weights = fit.coefficients / fit.coefficients.sum()
    assert fit.converged
    assert np.all(fit.coefficients >= 0)
    # Tolerance: 0.03 absolute on each normalised weight at 20k rows.
    np.testing.assert_allclose(weights, TRUE, atol=0.03)
    assert fit.intercept == pytest.approx(-4.0, abs=0.4)


def test_a_negatively_related_signal_gets_weight_zero_not_a_negative_one():
    rng = np.random.default_rng(1)
    features = rng.random((5_000, 2))
    liked = rng.random(5_000) < special.expit(6 * (features[:, 0] - features[:, 1]))
    fit = tuning.fit_logistic(features, liked, l2=1e-3)
    assert fit.coefficients[1] == 0.0 < fit.coefficients[0]


def test_a_constant_signal_is_left_to_the_intercept():
    features, liked = draw(5_000, np.random.default_rng(2))
    features[:, 3] = 0.5  # a signal missing everywhere: its neutral value
    fit = tuning.fit_logistic(features, liked, l2=1e-2)
    assert fit.coefficients[3] < 1e-6


def test_tune_picks_fusion_when_mutual_likes_need_both_directions():
    rng = np.random.default_rng(3)
    train_x, train_y = draw(8_000, rng)
    forward = rng.random((4_000, TRUE.size))
    reverse = rng.random((4_000, TRUE.size))
    p_forward = special.expit(8 * (forward @ TRUE - 0.5))
    p_reverse = special.expit(8 * (reverse @ TRUE - 0.5))
    liked = rng.random(4_000) < p_forward
    mutual = liked & (rng.random(4_000) < p_reverse)
    validation = tuning.Validation(
        forward=forward, reverse=reverse, decided=np.ones(4_000, bool), liked=liked, mutual=mutual
    )
    result = tuning.tune(train_x, train_y, validation)
    choices = dict(result.choice_auc_mutual)
    # Without the viewers' like rates there is no calibrated model to choose.
    assert set(choices) == {"off", *scoring.FUSIONS} - set(scoring.CALIBRATED_FUSIONS)
    assert result.calibration is None
    assert result.reciprocal and result.fusion in scoring.FUSIONS
    assert choices[result.fusion] == max(choices.values()) > choices["off"] + 0.05
    assert result.weights.sum() == pytest.approx(1.0)
    assert result.fit.l2 in tuning.DEFAULT_L2_GRID
    assert result.validation_auc_like > 0.7
    # The choices were made by the training rows' fit; the served weights are the final
    # fit's, on the training and validation decisions together, at the same l2.
    assert result.choosing_fit.n_rows == 8_000 and result.fit.n_rows == 12_000
    assert result.fit.l2 == result.choosing_fit.l2
    final = result.fit.coefficients
    np.testing.assert_allclose(result.weights, final / final.sum())
    assert not np.allclose(final, result.choosing_fit.coefficients)


def test_bad_arguments_name_what_is_wrong():
    features, liked = draw(100, np.random.default_rng(4))
    with pytest.raises(ValueError, match="both classes"):
        tuning.fit_logistic(features, np.zeros(100, bool), l2=1e-3)
    with pytest.raises(ValueError, match=r"train_labels must be \(100,\)"):
        tuning.fit_logistic(features, liked[:50], l2=1e-3)
    with pytest.raises(ValueError, match="finite"):
        tuning.fit_logistic(np.full((100, 5), np.nan), liked, l2=1e-3)
    with pytest.raises(ValueError, match="l2"):
        tuning.fit_logistic(features, liked, l2=-1.0)


def test_tune_fits_the_viewer_term_and_chooses_calibrated_when_openness_decides():
    """Who says yes back depends on how open the candidate is: a term no one-sided weight can
    carry (it is constant within each viewer's own decisions), which calibrated fusion reads
    from the reverse direction's viewer."""
    rng = np.random.default_rng(5)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.random((n, TRUE.size))
        rate = rng.beta(2, 3, size=n)
        liked = rng.random(n) < special.expit(-6.0 + 6.0 * (x @ TRUE) + 8.0 * rate)
        return x, rate, liked

    train_x, train_rate, train_y = rows(20_000)
    forward, forward_rate, liked = rows(6_000)
    reverse = rng.random((6_000, TRUE.size))
    reverse_rate = rng.beta(2, 3, size=6_000)
    back = rng.random(6_000) < special.expit(-6.0 + 6.0 * (reverse @ TRUE) + 8.0 * reverse_rate)
    validation = tuning.Validation(
        forward=forward,
        reverse=reverse,
        decided=np.ones(6_000, bool),
        liked=liked,
        mutual=liked & back,
        forward_rates=forward_rate,
        reverse_rates=reverse_rate,
    )
    result = tuning.tune(train_x, train_y, validation, train_rates=train_rate, default_rate=0.4)
    choices = dict(result.choice_auc_mutual)
    assert scoring.is_calibrated(result.fusion)
    assert choices[result.fusion] == max(choices.values())
    assert choices["calibrated"] > max(choices["harmonic"], choices["geometric"]) + 0.02
    cal = result.calibration
    assert cal is not None and cal.default_rate == 0.4
    # The true model: intercept -6, signal logit 6 · Σ TRUE_i x_i (TRUE sums to 1), rate 8.
    assert cal.intercept == pytest.approx(-6.0, abs=0.6)
    assert cal.scale == pytest.approx(6.0, rel=0.15)
    assert cal.viewer_rate == pytest.approx(8.0, rel=0.15)
