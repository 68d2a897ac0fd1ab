"""Ranking metrics of scores against labels, and their uncertainty.

Metrics (all pure functions of scores and labels):

* :func:`auc` — the Mann-Whitney U statistic divided by ``n_pos · n_neg``: the probability
  that a random positive outscores a random negative, ties counting one half. NaN when a
  class is empty.
* :func:`roc_curve` — (fpr, tpr) at every distinct score threshold, tied scores forming one
  step (a diagonal segment), so the trapezoid area equals :func:`auc`.
* :func:`ranking_at_k` — per viewer, rows ordered by score descending (ties by ``tiebreak``
  ascending, as the product orders by candidate id):

      precision@k = hits in top k / min(k, n_rows of the viewer)
      recall@k    = hits in top k / n_relevant of the viewer
      NDCG@k      = Σ_{i<k} rel_i / log2(i + 2)  /  Σ_{i<min(k, n_relevant)} 1 / log2(i + 2)

  averaged over viewers with at least one relevant row (the others have no recall and no
  ideal ranking). ``min(k, n_rows)`` in precision keeps viewers with fewer than k hidden
  rows from being capped below 1.
* :func:`per_viewer` — what a ranker is judged by: each viewer sees their own list, so the
  AUC (ties one half) and NDCG@k are computed within each viewer's rows and averaged over
  the viewers with at least one positive *and* one negative row (for the others any order
  is as good as any other). Pooled AUC also rewards telling viewers apart (e.g. who is
  picky), which no single list shows.
* :func:`bootstrap_auc` and :func:`percentile_interval` — resampled pairs, for the 95 %
  intervals of AUC and of a lead over a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import arrays
from compute.arrays import FloatArray


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve, ties counting one half (Mann-Whitney).

    Parameters
    ----------
    scores : (m,) float
        Higher = more likely positive. Must be finite.
    labels : (m,) bool

    Returns
    -------
    float in [0, 1], NaN when there are no positives or no negatives.
    """
    s = arrays.as_1d("scores", scores, np.float64)
    y = arrays.as_1d("labels", labels, np.bool_, s.size)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; got NaN or inf")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _midranks(values: FloatArray) -> FloatArray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    first = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def roc_curve(
    scores: npt.ArrayLike, labels: npt.ArrayLike, max_points: int = 501
) -> tuple[FloatArray, FloatArray]:
    """ROC points (fpr, tpr) from (0, 0) to (1, 1), one per distinct score threshold.

    Parameters
    ----------
    scores : (m,) float, finite
    labels : (m,) bool
    max_points : int ≥ 2
        Longer curves are thinned to this many points (evenly by index, ends kept), which
        is plenty for a plot; the area of a thinned curve may differ slightly.

    Returns
    -------
    (fpr, tpr) : two (p,) float64, non-decreasing. Empty when a class is empty.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be ≥ 2; got {max_points}")
    s = arrays.as_1d("scores", scores, np.float64)
    y = arrays.as_1d("labels", labels, np.bool_, s.size)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; got NaN or inf")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return np.empty(0), np.empty(0)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # The last row of each group of tied scores: the curve moves once per threshold.
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(~y_sorted)[last]
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    if fpr.size > max_points:
        keep = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


@dataclass(frozen=True)
class RankingMetrics:
    """Per-viewer top-k metrics averaged over viewers with at least one relevant row.

    Attributes
    ----------
    k : int
    precision, recall, ndcg : float (NaN when no viewer has a relevant row)
    n_groups : int
        Viewers averaged over.
    """

    k: int
    precision: float
    recall: float
    ndcg: float
    n_groups: int


def ranking_at_k(
    group_ids: npt.ArrayLike,
    scores: npt.ArrayLike,
    relevant: npt.ArrayLike,
    k: int,
    tiebreak: npt.ArrayLike | None = None,
) -> RankingMetrics:
    """Precision, recall and NDCG at ``k`` per group (viewer), averaged (see module doc).

    Parameters
    ----------
    group_ids : (m,) int
        The viewer of each row.
    scores : (m,) float, finite
    relevant : (m,) bool
    k : int ≥ 1
    tiebreak : (m,) int, optional
        Among equal scores the lower tiebreak ranks first (default: input order).

    Returns
    -------
    RankingMetrics
    """
    if not (isinstance(k, int | np.integer) and k >= 1):
        raise ValueError(f"k must be an int ≥ 1; got {k!r}")
    g = arrays.as_1d("group_ids", group_ids, np.int64)
    s = arrays.as_1d("scores", scores, np.float64, g.size)
    rel = arrays.as_1d("relevant", relevant, np.bool_, g.size)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; got NaN or inf")
    tb = (
        np.arange(g.size, dtype=np.int64)
        if tiebreak is None
        else arrays.as_1d("tiebreak", tiebreak, np.int64, g.size)
    )
    if g.size == 0:
        return RankingMetrics(k=int(k), precision=np.nan, recall=np.nan, ndcg=np.nan, n_groups=0)
    order = np.lexsort((tb, -s, g))
    g_sorted, rel_sorted = g[order], rel[order]
    first = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    starts = np.flatnonzero(first)
    group_index = np.cumsum(first) - 1
    rank = np.arange(g.size) - starts[group_index]
    n_groups_all = starts.size
    sizes = np.diff(np.r_[starts, g.size])
    n_relevant = np.bincount(group_index, weights=rel_sorted, minlength=n_groups_all)
    in_top = rank < k
    hits = np.bincount(group_index, weights=rel_sorted & in_top, minlength=n_groups_all)
    gains = np.where(rel_sorted & in_top, 1.0 / np.log2(rank + 2.0), 0.0)
    dcg = np.bincount(group_index, weights=gains, minlength=n_groups_all)
    discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    ideal_len = np.minimum(n_relevant, k).astype(np.int64)
    idcg = np.where(ideal_len > 0, discounts[np.maximum(ideal_len - 1, 0)], 0.0)
    has = n_relevant > 0
    if not has.any():
        return RankingMetrics(k=int(k), precision=np.nan, recall=np.nan, ndcg=np.nan, n_groups=0)
    precision = hits[has] / np.minimum(k, sizes[has])
    recall = hits[has] / n_relevant[has]
    ndcg = dcg[has] / idcg[has]
    return RankingMetrics(
        k=int(k),
        precision=float(precision.mean()),
        recall=float(recall.mean()),
        ndcg=float(ndcg.mean()),
        n_groups=int(has.sum()),
    )


@dataclass(frozen=True)
class ViewerMetrics:
    """Per-viewer AUC and NDCG@k averaged over viewers with both classes.

    Attributes
    ----------
    auc, ndcg : float (NaN when no viewer has both a positive and a negative row)
    n_viewers : int
        Viewers averaged over.
    """

    auc: float
    ndcg: float
    n_viewers: int


def per_viewer(
    group_ids: npt.ArrayLike,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    k: int,
    tiebreak: npt.ArrayLike | None = None,
) -> ViewerMetrics:
    """Mean within-viewer AUC and NDCG@k over viewers with ≥ 1 positive and ≥ 1 negative.

    Parameters
    ----------
    group_ids : (m,) int
        The viewer of each row.
    scores : (m,) float, finite
    labels : (m,) bool
    k : int ≥ 1
    tiebreak : (m,) int, optional
        As in :func:`ranking_at_k` (NDCG only; AUC counts ties one half).

    Returns
    -------
    ViewerMetrics
    """
    g = arrays.as_1d("group_ids", group_ids, np.int64)
    s = arrays.as_1d("scores", scores, np.float64, g.size)
    y = arrays.as_1d("labels", labels, np.bool_, g.size)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; got NaN or inf")
    groups, inverse = np.unique(g, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_pos = np.bincount(inverse, weights=y, minlength=groups.size)
    n_all = np.bincount(inverse, minlength=groups.size).astype(np.float64)
    n_neg = n_all - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return ViewerMetrics(auc=float("nan"), ndcg=float("nan"), n_viewers=0)
    # Midranks within each viewer: sort by (viewer, score), a tie is a run of equal pairs.
    order = np.lexsort((s, inverse))
    gi, ss = inverse[order], s[order]
    group_start = np.searchsorted(gi, np.arange(groups.size))
    position = np.arange(g.size) - group_start[gi]
    new_tie = np.r_[True, (gi[1:] != gi[:-1]) | (ss[1:] != ss[:-1])]
    tie_id = np.cumsum(new_tie) - 1
    tie_first = position[new_tie]
    tie_last = np.r_[position[np.flatnonzero(new_tie)[1:] - 1], position[-1]]
    ranks = np.empty(g.size)
    ranks[order] = (tie_first[tie_id] + tie_last[tie_id]) / 2.0 + 1.0
    rank_sum = np.bincount(inverse, weights=np.where(y, ranks, 0.0), minlength=groups.size)
    u = rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0
    viewer_auc = u / (n_pos[both] * n_neg[both])
    keep = both[inverse]
    tb = None if tiebreak is None else arrays.as_1d("tiebreak", tiebreak, np.int64, g.size)[keep]
    ranking = ranking_at_k(g[keep], s[keep], y[keep], k, tb)
    return ViewerMetrics(auc=float(viewer_auc.mean()), ndcg=ranking.ndcg, n_viewers=int(both.sum()))


def bootstrap_auc(
    pair_index: npt.ArrayLike,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    n_boot: int,
    rng: np.random.Generator,
) -> FloatArray:
    """AUC of several scorers on ``n_boot`` resamples of the pairs (with replacement).

    Pairs, not rows, are resampled (both rows of a pair share a label), and every scorer
    sees the same resamples, so differences between columns are paired: the spread of
    ``out[:, i] - out[:, j]`` is the uncertainty of scorer i's lead over scorer j.

    Parameters
    ----------
    pair_index : (m,) int
        The pair of each row, 0..p-1.
    scores : (s, m) float, finite
        One row per scorer.
    labels : (m,) bool
    n_boot : int ≥ 1
    rng : np.random.Generator

    Returns
    -------
    (n_boot, s) float64; NaN for a resample lacking a class.
    """
    if not (isinstance(n_boot, int | np.integer) and n_boot >= 1):
        raise ValueError(f"n_boot must be an int ≥ 1; got {n_boot!r}")
    pairs = arrays.as_1d("pair_index", pair_index, np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != pairs.size:
        raise ValueError(f"scores must be (s, {pairs.size}); got {s.shape}")
    y = arrays.as_1d("labels", labels, np.bool_, pairs.size)
    n_pairs = int(pairs.max()) + 1 if pairs.size else 0
    out = np.full((n_boot, s.shape[0]), np.nan)
    if n_pairs == 0:
        return out
    # Rows of each pair, as CSR, to expand a resample of pairs into rows.
    order = np.argsort(pairs, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs, minlength=n_pairs))])
    for b in range(n_boot):
        drawn = rng.integers(0, n_pairs, n_pairs)
        lengths = indptr[drawn + 1] - indptr[drawn]
        starts = np.repeat(indptr[drawn] - np.cumsum(lengths) + lengths, lengths)
        rows = order[starts + np.arange(lengths.sum())]
        for i in range(s.shape[0]):
            out[b, i] = auc(s[i, rows], y[rows])
    return out


def percentile_interval(values: npt.ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` (NaN, NaN if none)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)
