"""compute.evaluation: metrics against hand-computed values, labels, sampling, baselines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from compute import evaluation, ranking_metrics


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


# ------------------------------------------------------------------------------ AUC and ROC


def test_auc_of_a_textbook_example() -> None:
    # Of the four (positive, negative) pairs, 0.35 < 0.4 is the one misordered: 3/4.
    assert ranking_metrics.auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75


def test_auc_counts_ties_one_half() -> None:
    # (1 vs 1) ½ + (1 vs 0) 1 + (0 vs 1) 0 + (0 vs 0) ½ = 2 of 4.
    assert ranking_metrics.auc([1.0, 1.0, 0.0, 0.0], [True, False, True, False]) == 0.5
    # the positive ties one negative (½) and beats the other (1): 1.5 / 2.
    assert ranking_metrics.auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75
    # every score equal: no information, exactly ½.
    assert ranking_metrics.auc(np.zeros(7), np.arange(7) % 2 == 0) == 0.5


def test_auc_perfect_inverted_and_undefined() -> None:
    assert ranking_metrics.auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert ranking_metrics.auc([0.1, 0.2, 0.9], [True, True, False]) == 0.0
    assert math.isnan(ranking_metrics.auc([0.1, 0.2], [True, True]))
    assert math.isnan(ranking_metrics.auc([], np.zeros(0, dtype=bool)))


def test_auc_equals_brute_force_on_tied_random_scores() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        scores = rng.integers(0, 5, 40).astype(float)  # many ties
        labels = rng.random(40) < 0.3
        if labels.all() or not labels.any():
            continue
        assert ranking_metrics.auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels))


def test_auc_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="scores must be finite"):
        ranking_metrics.auc([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="labels must have length 2"):
        ranking_metrics.auc([0.1, 0.2], [True])
    with pytest.raises(TypeError, match="labels must be bool"):
        ranking_metrics.auc([0.1, 0.2], [1, 0])


def test_roc_curve_steps_once_per_threshold_and_its_area_is_the_auc() -> None:
    fpr, tpr = ranking_metrics.roc_curve([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 200).astype(float)
    labels = rng.random(200) < 0.4
    fpr, tpr = ranking_metrics.roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(ranking_metrics.auc(scores, labels))
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0


def test_roc_curve_is_thinned_to_max_points() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.random(5000), rng.random(5000) < 0.5
    fpr, tpr = ranking_metrics.roc_curve(scores, labels, max_points=101)
    assert fpr.size == tpr.size == 101
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


# ------------------------------------------------------------------------------ ranking at k


def test_ranking_at_k_by_hand() -> None:
    groups = [1, 1, 1, 1, 2, 2, 3, 3, 4]
    scores = [0.9, 0.8, 0.7, 0.6, 0.3, 0.5, 0.9, 0.1, 0.1]
    relevant = [False, True, False, True, True, False, False, False, True]
    got = ranking_metrics.ranking_at_k(groups, scores, relevant, k=2)
    # viewer 1: top 2 = (no, yes) → P 1/2, R 1/2, DCG 1/log2 3, IDCG 1 + 1/log2 3.
    # viewer 2: order (0.5 no, 0.3 yes) → P 1/2, R 1, NDCG (1/log2 3) / 1.
    # viewer 3: nothing relevant → not averaged. viewer 4: one row, relevant → 1, 1, 1.
    inv = 1 / math.log2(3)
    assert got.k == 2 and got.n_groups == 3
    assert got.precision == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert got.recall == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert got.ndcg == pytest.approx((inv / (1 + inv) + inv + 1.0) / 3)


def test_ranking_at_k_breaks_ties_by_tiebreak() -> None:
    # Equal scores: candidate 3 ranks before candidate 9, so only 3 is in the top 1.
    groups, scores = [5, 5], [0.4, 0.4]
    first = ranking_metrics.ranking_at_k(groups, scores, [False, True], k=1, tiebreak=[3, 9])
    assert first.precision == 0.0 and first.recall == 0.0 and first.ndcg == 0.0
    second = ranking_metrics.ranking_at_k(groups, scores, [False, True], k=1, tiebreak=[9, 3])
    assert second.precision == 1.0 and second.recall == 1.0 and second.ndcg == 1.0


def test_ranking_at_k_without_relevant_rows_is_nan() -> None:
    got = ranking_metrics.ranking_at_k([1, 1], [0.1, 0.2], [False, False], k=3)
    assert got.n_groups == 0 and math.isnan(got.precision) and math.isnan(got.ndcg)
    with pytest.raises(ValueError, match="k must be an int ≥ 1"):
        ranking_metrics.ranking_at_k([1], [0.1], [True], k=0)


# ------------------------------------------------------------------------------ pairs and labels


def test_decision_pairs_are_unordered_distinct_and_need_a_like_or_pass() -> None:
    users = [2, 1, 3, 5, 4]
    targets = [1, 2, 4, 5, 6]
    eligible = [True, True, False, True, True]  # 3→4 is a block; 5→5 is a self-decision
    lo, hi = evaluation.decision_pairs(users, targets, eligible)
    assert lo.tolist() == [1, 4] and hi.tolist() == [2, 6]


def test_sample_hidden_is_seeded_sized_and_sorted() -> None:
    first = evaluation.sample_hidden(100, 0.2, np.random.default_rng(42))
    again = evaluation.sample_hidden(100, 0.2, np.random.default_rng(42))
    other = evaluation.sample_hidden(100, 0.2, np.random.default_rng(43))
    assert first.tolist() == again.tolist() != other.tolist()
    assert first.size == 20 and np.unique(first).size == 20 and np.all(np.diff(first) > 0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        evaluation.sample_hidden(10, 1.0, np.random.default_rng(0))


def test_in_pairs_matches_either_direction() -> None:
    lo, hi = np.array([1, 1, 4]), np.array([2, 7, 6])
    got = evaluation.in_pairs([2, 1, 6, 7, 4, 3], [1, 7, 4, 2, 5, 4], lo, hi)
    assert got.tolist() == [True, True, True, False, False, False]


def test_directed_rows_label_both_directions() -> None:
    lo, hi = [1, 3, 5], [2, 4, 6]
    users = [1, 2, 3, 4, 6, 7]
    targets = [2, 1, 4, 3, 5, 8]
    likes = [True, True, True, False, False, True]  # 6→5 a block; 7→8 another pair
    rows = evaluation.directed_rows(lo, hi, users, targets, likes)
    assert rows.viewer_ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert rows.candidate_ids.tolist() == [2, 1, 4, 3, 6, 5]
    assert rows.pair_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert rows.mutual.tolist() == [True, True, False, False, False, False]
    assert rows.decided.tolist() == [True, True, True, True, False, True]
    assert rows.liked.tolist() == [True, True, True, False, False, False]
    kept = evaluation.subset_pairs(rows, np.array([False, True, True]))
    assert kept.viewer_ids.tolist() == [3, 4, 5, 6] and kept.pair_index.tolist() == [0, 0, 1, 1]


# ------------------------------------------------------------------------------ baselines


def test_like_rates_are_smoothed_towards_the_prior() -> None:
    # id 1: 1 like of 2; id 2: 0 of 1; id 3: no decisions.
    got = evaluation.like_rates([1, 2, 3], [1, 1, 2], [True, False, False], 0.5, 2.0)
    np.testing.assert_allclose(got, [(1 + 1) / 4, (0 + 1) / 3, 0.5])
    raw = evaluation.like_rates([1, 2, 3], [1, 1, 2], [True, False, False], 0.5, 0.0)
    np.testing.assert_allclose(raw, [0.5, 0.0, 0.5])


def test_reciprocal_popularity_by_hand() -> None:
    # Visible: 1→2 like, 1→3 pass, 4→2 like, 4→3 like (global like rate 3/4), no smoothing.
    # give: 1 → 1/2, 4 → 1, 2 → prior 3/4; receive: 2 → 1, 3 → 1/2, 1 → prior 3/4.
    forward, fused = evaluation.reciprocal_popularity(
        [1, 2], [2, 1], [1, 1, 4, 4], [2, 3, 2, 3], [True, False, True, True], prior_weight=0.0
    )
    s12, s21 = 0.5 * 1.0, 0.75 * 0.75
    np.testing.assert_allclose(forward, [s12, s21])
    np.testing.assert_allclose(fused, [2 * s12 * s21 / (s12 + s21)] * 2)


def test_harmonic_of_zeros_is_zero() -> None:
    np.testing.assert_allclose(evaluation.harmonic([0.0, 0.5, 1.0], [0.0, 0.5, 0.0]), [0, 0.5, 0])


def test_measure_reports_every_metric_on_the_right_rows() -> None:
    rows = evaluation.directed_rows(
        [1, 3], [2, 4], [1, 2, 3, 4], [2, 1, 4, 3], [True, True, True, False]
    )
    # The mutual pair (1, 2) scores above the one-sided pair (3, 4).
    got = evaluation.measure(rows, [0.9, 0.9, 0.2, 0.2], k=1)
    assert got.values["auc_mutual"] == 1.0
    # likes: 1→2, 2→1, 3→4 (0.9, 0.9, 0.2) against the pass 4→3 (0.2): (1 + 1 + ½) / 3.
    assert got.values["auc_like"] == pytest.approx(2.5 / 3)
    assert got.values["n_rows"] == 4 and got.values["n_mutual_rows"] == 2
    assert got.values["precision_at_k_mutual"] == 1.0
    assert got.roc_mutual[0].tolist() == [0.0, 0.0, 1.0]


# ------------------------------------------------------------------------------ uncertainty


def test_bootstrap_resamples_pairs_and_pairs_the_scorers() -> None:
    rng = np.random.default_rng(0)
    n_pairs = 300
    pair_index = np.repeat(np.arange(n_pairs), 2)
    labels = np.repeat(rng.random(n_pairs) < 0.3, 2)
    good = labels + rng.normal(0, 1.0, pair_index.size)
    noise = rng.normal(0, 1.0, pair_index.size)
    out = ranking_metrics.bootstrap_auc(
        pair_index, np.vstack([good, good, noise]), labels, 200, np.random.default_rng(1)
    )
    assert out.shape == (200, 3)
    # The same resamples: a scorer minus itself is exactly 0 every time.
    assert np.all(out[:, 0] == out[:, 1])
    low, high = ranking_metrics.percentile_interval(out[:, 0] - out[:, 2])
    assert 0.0 < low < high
    full = ranking_metrics.auc(good, labels)
    low, high = ranking_metrics.percentile_interval(out[:, 0])
    assert low < full < high and high - low < 0.15
    again = ranking_metrics.bootstrap_auc(
        pair_index, np.vstack([good, good, noise]), labels, 200, np.random.default_rng(1)
    )
    np.testing.assert_array_equal(out, again)


def test_percentile_interval_ignores_nan() -> None:
    low, high = ranking_metrics.percentile_interval([np.nan, *range(101)], level=0.9)
    assert (low, high) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(x) for x in ranking_metrics.percentile_interval([np.nan]))


def test_per_viewer_auc_and_ndcg_average_viewers_with_both_classes() -> None:
    # Viewer 1: perfect order. Viewer 2: reversed. Viewer 3: a tie between its two rows.
    # Viewer 4 has only positives and viewer 5 only negatives: left out.
    groups = np.array([1, 1, 1, 2, 2, 3, 3, 4, 5])
    scores = np.array([0.9, 0.5, 0.1, 0.2, 0.8, 0.4, 0.4, 0.3, 0.7])
    labels = np.array([True, False, False, True, False, True, False, True, False])
    got = ranking_metrics.per_viewer(groups, scores, labels, k=1)
    assert got.n_viewers == 3
    assert got.auc == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    # NDCG@1: 1 for viewer 1, 0 for 2; viewer 3's tie goes to input order (the positive).
    assert got.ndcg == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    # The pooled AUC is another number: it also compares rows of different viewers.
    assert ranking_metrics.auc(scores, labels) != pytest.approx(got.auc)


def test_per_viewer_agrees_with_the_pooled_auc_within_each_viewer() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 40, 600)
    scores = np.round(rng.random(600), 1)  # plenty of ties
    labels = rng.random(600) < 0.3
    got = ranking_metrics.per_viewer(groups, scores, labels, k=3)
    expected = [
        ranking_metrics.auc(scores[groups == v], labels[groups == v])
        for v in np.unique(groups)
        if 0 < labels[groups == v].sum() < (groups == v).sum()
    ]
    assert got.n_viewers == len(expected)
    assert got.auc == pytest.approx(float(np.mean(expected)), abs=1e-12)


def test_per_viewer_without_a_viewer_having_both_classes_is_nan() -> None:
    got = ranking_metrics.per_viewer(
        np.array([1, 2]), np.array([0.1, 0.2]), np.array([True, False]), 3
    )
    assert got.n_viewers == 0 and np.isnan(got.auc) and np.isnan(got.ndcg)
