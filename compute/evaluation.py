"""Offline evaluation: hidden-pair sampling, labels, ranking metrics and simple baselines.

The method (orchestrated by ``jobs.tools.evaluate``): a seeded random share of the *unordered*
pairs {u, v} with at least one like or pass is hidden — both directions' decisions and
ratings — before the signal jobs run; every hidden pair is then scored in both directions
and the scores are measured against the hidden decisions.

Evaluation happens on **directed rows**: each hidden pair {u, v} gives the rows u→v (what u
would be shown) and v→u. A row carries

* ``mutual``  — both liked each other (the same on both rows of a pair);
* ``decided`` — the viewer made a decision (like, pass or block) about the candidate;
* ``liked``   — the viewer liked the candidate (only meaningful where ``decided``).

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

Baselines: :func:`reciprocal_popularity` (like rates over the *visible* decisions only; its
forward part ``give_rate(a) · receive_rate(b)`` is the one-sided baseline); random order and
rating quality alone are built by the caller from an ``rng`` and the production scorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _as_1d(name: str, value: npt.ArrayLike, dtype: type, size: int | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if size is not None and arr.size != size:
        raise ValueError(f"{name} must have length {size}; got {arr.size}")
    if dtype is np.bool_ and arr.size and arr.dtype != np.bool_:
        raise TypeError(f"{name} must be bool; got {arr.dtype}")
    if dtype is np.int64 and arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer; got {arr.dtype}")
    return arr.astype(dtype, copy=False)


# ------------------------------------------------------------------------------ metrics


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
    s = _as_1d("scores", scores, np.float64)
    y = _as_1d("labels", labels, np.bool_, s.size)
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
    s = _as_1d("scores", scores, np.float64)
    y = _as_1d("labels", labels, np.bool_, s.size)
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
    g = _as_1d("group_ids", group_ids, np.int64)
    s = _as_1d("scores", scores, np.float64, g.size)
    rel = _as_1d("relevant", relevant, np.bool_, g.size)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; got NaN or inf")
    tb = (
        np.arange(g.size, dtype=np.int64)
        if tiebreak is None
        else _as_1d("tiebreak", tiebreak, np.int64, g.size)
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
    g = _as_1d("group_ids", group_ids, np.int64)
    s = _as_1d("scores", scores, np.float64, g.size)
    y = _as_1d("labels", labels, np.bool_, g.size)
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
    tb = None if tiebreak is None else _as_1d("tiebreak", tiebreak, np.int64, g.size)[keep]
    ranking = ranking_at_k(g[keep], s[keep], y[keep], k, tb)
    return ViewerMetrics(auc=float(viewer_auc.mean()), ndcg=ranking.ndcg, n_viewers=int(both.sum()))


# ------------------------------------------------------------------------------ hidden pairs


def decision_pairs(
    user_ids: npt.ArrayLike, target_ids: npt.ArrayLike, eligible: npt.ArrayLike
) -> tuple[IntArray, IntArray]:
    """Unordered pairs {lo, hi} (lo < hi) having at least one eligible decision.

    Parameters
    ----------
    user_ids, target_ids : (d,) int
        Directed decisions (who decided about whom). Self-decisions are ignored.
    eligible : (d,) bool
        Decisions that make their pair eligible (likes and passes; not blocks).

    Returns
    -------
    (pair_lo, pair_hi) : two (p,) int64, sorted by (lo, hi), distinct.
    """
    u = _as_1d("user_ids", user_ids, np.int64)
    t = _as_1d("target_ids", target_ids, np.int64, u.size)
    ok = _as_1d("eligible", eligible, np.bool_, u.size) & (u != t)
    lo, hi = np.minimum(u[ok], t[ok]), np.maximum(u[ok], t[ok])
    pairs = np.unique(np.column_stack([lo, hi]), axis=0) if lo.size else np.empty((0, 2), np.int64)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def sample_hidden(n_pairs: int, fraction: float, rng: np.random.Generator) -> IntArray:
    """Sorted indices of ``round(fraction · n_pairs)`` pairs drawn without replacement.

    Parameters
    ----------
    n_pairs : int ≥ 0
    fraction : float in (0, 1)
    rng : np.random.Generator

    Returns
    -------
    (h,) int64
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction!r}")
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be ≥ 0; got {n_pairs}")
    n_hidden = round(fraction * n_pairs)
    return np.sort(rng.choice(n_pairs, size=n_hidden, replace=False)).astype(np.int64)


def in_pairs(
    a_ids: npt.ArrayLike, b_ids: npt.ArrayLike, pair_lo: npt.ArrayLike, pair_hi: npt.ArrayLike
) -> BoolArray:
    """(m,) bool: whether the unordered pair {a, b} of each row is one of the given pairs.

    ``pair_lo``/``pair_hi`` must be as returned by :func:`decision_pairs` (lo < hi, sorted).
    """
    a = _as_1d("a_ids", a_ids, np.int64)
    b = _as_1d("b_ids", b_ids, np.int64, a.size)
    lo_p = _as_1d("pair_lo", pair_lo, np.int64)
    hi_p = _as_1d("pair_hi", pair_hi, np.int64, lo_p.size)
    if lo_p.size == 0 or a.size == 0:
        return np.zeros(a.size, dtype=np.bool_)
    # Dense codes for every id make each unordered pair one int64 key (n_ids² < 2⁶³).
    ids = np.unique(np.concatenate([a, b, lo_p, hi_p]))
    n = np.int64(ids.size)
    lo = np.searchsorted(ids, np.minimum(a, b))
    hi = np.searchsorted(ids, np.maximum(a, b))
    keys = np.sort(np.searchsorted(ids, lo_p) * n + np.searchsorted(ids, hi_p))
    query = lo * n + hi
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    found: npt.NDArray[np.bool_] = keys[pos] == query
    return found


@dataclass(frozen=True, eq=False)
class DirectedRows:
    """Both directions of every evaluated pair: row ``2i`` is lo→hi, row ``2i + 1`` is hi→lo.

    Attributes
    ----------
    viewer_ids, candidate_ids : (2p,) int64
    pair_index : (2p,) int64
        Index of the pair (0..p-1).
    mutual : (2p,) bool
        Both liked each other.
    decided : (2p,) bool
        The viewer decided (like, pass or block) about the candidate.
    liked : (2p,) bool
        The viewer liked the candidate.
    """

    viewer_ids: IntArray
    candidate_ids: IntArray
    pair_index: IntArray
    mutual: BoolArray
    decided: BoolArray
    liked: BoolArray

    def __len__(self) -> int:
        return int(self.viewer_ids.size)


def directed_rows(
    pair_lo: npt.ArrayLike,
    pair_hi: npt.ArrayLike,
    user_ids: npt.ArrayLike,
    target_ids: npt.ArrayLike,
    is_like: npt.ArrayLike,
) -> DirectedRows:
    """Label both directions of each pair from the (hidden) decisions.

    Parameters
    ----------
    pair_lo, pair_hi : (p,) int
        The evaluated pairs.
    user_ids, target_ids : (d,) int
        Decisions (any kind); those about other pairs are ignored. At most one per
        direction (the ``likes`` primary key).
    is_like : (d,) bool

    Returns
    -------
    DirectedRows
    """
    lo = _as_1d("pair_lo", pair_lo, np.int64)
    hi = _as_1d("pair_hi", pair_hi, np.int64, lo.size)
    u = _as_1d("user_ids", user_ids, np.int64)
    t = _as_1d("target_ids", target_ids, np.int64, u.size)
    like = _as_1d("is_like", is_like, np.bool_, u.size)
    p = lo.size
    viewers = np.column_stack([lo, hi]).reshape(-1)
    candidates = np.column_stack([hi, lo]).reshape(-1)
    # Directed keys of rows and decisions, matched by sorting (no per-row Python).
    row_keys = np.column_stack([viewers, candidates])
    dec_keys = np.column_stack([u, t])
    decided = np.zeros(2 * p, dtype=np.bool_)
    liked = np.zeros(2 * p, dtype=np.bool_)
    if p and u.size:
        all_keys = np.concatenate([row_keys, dec_keys])
        _, inverse = np.unique(all_keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        row_code, dec_code = inverse[: 2 * p], inverse[2 * p :]
        n_codes = int(inverse.max()) + 1
        has_decision = np.zeros(n_codes, dtype=np.bool_)
        has_like = np.zeros(n_codes, dtype=np.bool_)
        has_decision[dec_code] = True
        has_like[dec_code[like]] = True
        decided = has_decision[row_code]
        liked = has_like[row_code]
    both = liked.reshape(p, 2).all(axis=1) if p else np.zeros(0, dtype=np.bool_)
    return DirectedRows(
        viewer_ids=viewers.astype(np.int64),
        candidate_ids=candidates.astype(np.int64),
        pair_index=np.repeat(np.arange(p, dtype=np.int64), 2),
        mutual=np.repeat(both, 2),
        decided=decided,
        liked=liked,
    )


def subset_pairs(rows: DirectedRows, keep_pairs: npt.ArrayLike) -> DirectedRows:
    """The rows of the pairs flagged in ``keep_pairs`` ((p,) bool), pairs renumbered."""
    p = len(rows) // 2
    keep = _as_1d("keep_pairs", keep_pairs, np.bool_, p)
    row_keep = np.repeat(keep, 2)
    renumber = np.cumsum(keep) - 1
    return DirectedRows(
        viewer_ids=rows.viewer_ids[row_keep],
        candidate_ids=rows.candidate_ids[row_keep],
        pair_index=renumber[rows.pair_index[row_keep]].astype(np.int64),
        mutual=rows.mutual[row_keep],
        decided=rows.decided[row_keep],
        liked=rows.liked[row_keep],
    )


# ------------------------------------------------------------------------------ baselines


def harmonic(forward: npt.ArrayLike, reverse: npt.ArrayLike) -> FloatArray:
    """Element-wise harmonic mean ``2xy / (x + y)`` of non-negative values (0 when both are 0)."""
    x = np.asarray(forward, dtype=np.float64)
    y = np.asarray(reverse, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"forward and reverse must have equal shapes; got {x.shape} and {y.shape}")
    total = x + y
    return np.where(total > 0, 2.0 * x * y / np.where(total > 0, total, 1.0), 0.0)


def like_rates(
    ids: npt.ArrayLike,
    decision_ids: npt.ArrayLike,
    is_like: npt.ArrayLike,
    prior_rate: float,
    prior_weight: float,
) -> FloatArray:
    """Smoothed share of likes among the decisions counted for each id.

    ``rate = (likes + prior_weight · prior_rate) / (decisions + prior_weight)``, so an id
    with no decisions gets ``prior_rate`` rather than 0/0.

    Parameters
    ----------
    ids : (n,) int
        Whose rates to return.
    decision_ids : (d,) int
        The id each decision counts for (the decider, or the one decided about).
    is_like : (d,) bool
    prior_rate : float in [0, 1]
    prior_weight : float ≥ 0

    Returns
    -------
    (n,) float64 in [0, 1]
    """
    if not 0.0 <= prior_rate <= 1.0:
        raise ValueError(f"prior_rate must be in [0, 1]; got {prior_rate!r}")
    if not prior_weight >= 0:
        raise ValueError(f"prior_weight must be ≥ 0; got {prior_weight!r}")
    wanted = _as_1d("ids", ids, np.int64)
    d = _as_1d("decision_ids", decision_ids, np.int64)
    like = _as_1d("is_like", is_like, np.bool_, d.size)
    keys, inverse = np.unique(d, return_inverse=True)
    n_dec = np.bincount(inverse, minlength=keys.size).astype(np.float64)
    n_like = np.bincount(inverse, weights=like, minlength=keys.size)
    pos = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    found = (keys[pos] == wanted) if keys.size else np.zeros(wanted.size, dtype=np.bool_)
    decisions = np.where(found, n_dec[pos] if keys.size else 0.0, 0.0)
    likes = np.where(found, n_like[pos] if keys.size else 0.0, 0.0)
    denom = decisions + prior_weight
    return np.where(
        denom > 0, (likes + prior_weight * prior_rate) / np.where(denom > 0, denom, 1), prior_rate
    )


def reciprocal_popularity(
    viewer_ids: npt.ArrayLike,
    candidate_ids: npt.ArrayLike,
    visible_user_ids: npt.ArrayLike,
    visible_target_ids: npt.ArrayLike,
    visible_is_like: npt.ArrayLike,
    prior_weight: float = 2.0,
) -> tuple[FloatArray, FloatArray]:
    """Reciprocal popularity of directed rows, from the visible decisions only.

    ``s(a→b) = give_rate(a) · receive_rate(b)``: the share of a's decisions that were likes
    times the share of the decisions about b that were likes (both smoothed towards the
    global like rate with ``prior_weight`` pseudo-decisions, see :func:`like_rates`).

    Returns
    -------
    (forward, fused) : two (m,) float64
        ``s(a→b)`` and the harmonic mean of ``s(a→b)`` and ``s(b→a)``.
    """
    a = _as_1d("viewer_ids", viewer_ids, np.int64)
    b = _as_1d("candidate_ids", candidate_ids, np.int64, a.size)
    u = _as_1d("visible_user_ids", visible_user_ids, np.int64)
    t = _as_1d("visible_target_ids", visible_target_ids, np.int64, u.size)
    like = _as_1d("visible_is_like", visible_is_like, np.bool_, u.size)
    global_rate = float(like.mean()) if like.size else 0.5
    ids = np.union1d(a, b)
    give = like_rates(ids, u, like, global_rate, prior_weight)
    receive = like_rates(ids, t, like, global_rate, prior_weight)
    ia, ib = np.searchsorted(ids, a), np.searchsorted(ids, b)
    forward = give[ia] * receive[ib]
    reverse = give[ib] * receive[ia]
    return forward, harmonic(forward, reverse)


# ------------------------------------------------------------------------------ one scorer


@dataclass(frozen=True, eq=False)
class ScoreMetrics:
    """Everything measured for one scorer on the evaluated rows.

    Attributes
    ----------
    values : dict[str, float | int]
        ``auc_mutual``, ``auc_like``, ``precision_at_k_mutual``, ``recall_at_k_mutual``,
        ``ndcg_at_k_mutual``, ``precision_at_k_like``, ``recall_at_k_like``,
        ``ndcg_at_k_like``, ``k``, ``n_rows``, ``n_mutual_rows``, ``n_decided_rows``,
        ``n_like_rows``, ``n_viewers_mutual``, ``n_viewers_like``, and per viewer
        (:func:`per_viewer`) ``viewer_auc_mutual``, ``viewer_ndcg_at_k_mutual``,
        ``n_viewers_both_mutual``, ``viewer_auc_like``, ``viewer_ndcg_at_k_like``,
        ``n_viewers_both_like``.
    roc_mutual, roc_like : (fpr, tpr) pairs of (p,) float64
    """

    values: dict[str, float | int]
    roc_mutual: tuple[FloatArray, FloatArray]
    roc_like: tuple[FloatArray, FloatArray]


def measure(rows: DirectedRows, scores: npt.ArrayLike, k: int) -> ScoreMetrics:
    """Measure one scorer's row scores against the hidden labels (see module doc).

    Parameters
    ----------
    rows : DirectedRows
    scores : (2p,) float, finite — the score the viewer would be shown for the candidate.
    k : int ≥ 1

    Returns
    -------
    ScoreMetrics
    """
    s = _as_1d("scores", scores, np.float64, len(rows))
    d = rows.decided
    mutual_rank = ranking_at_k(rows.viewer_ids, s, rows.mutual, k, rows.candidate_ids)
    like_rank = ranking_at_k(rows.viewer_ids[d], s[d], rows.liked[d], k, rows.candidate_ids[d])
    mutual_viewer = per_viewer(rows.viewer_ids, s, rows.mutual, k, rows.candidate_ids)
    like_viewer = per_viewer(rows.viewer_ids[d], s[d], rows.liked[d], k, rows.candidate_ids[d])
    values: dict[str, float | int] = {
        "auc_mutual": auc(s, rows.mutual),
        "auc_like": auc(s[d], rows.liked[d]),
        "precision_at_k_mutual": mutual_rank.precision,
        "recall_at_k_mutual": mutual_rank.recall,
        "ndcg_at_k_mutual": mutual_rank.ndcg,
        "precision_at_k_like": like_rank.precision,
        "recall_at_k_like": like_rank.recall,
        "ndcg_at_k_like": like_rank.ndcg,
        "k": int(k),
        "n_rows": len(rows),
        "n_mutual_rows": int(rows.mutual.sum()),
        "n_decided_rows": int(d.sum()),
        "n_like_rows": int(rows.liked.sum()),
        "n_viewers_mutual": mutual_rank.n_groups,
        "n_viewers_like": like_rank.n_groups,
        "viewer_auc_mutual": mutual_viewer.auc,
        "viewer_ndcg_at_k_mutual": mutual_viewer.ndcg,
        "n_viewers_both_mutual": mutual_viewer.n_viewers,
        "viewer_auc_like": like_viewer.auc,
        "viewer_ndcg_at_k_like": like_viewer.ndcg,
        "n_viewers_both_like": like_viewer.n_viewers,
    }
    return ScoreMetrics(
        values=values,
        roc_mutual=roc_curve(s, rows.mutual),
        roc_like=roc_curve(s[d], rows.liked[d]),
    )


# ------------------------------------------------------------------------------ uncertainty


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
    pairs = _as_1d("pair_index", pair_index, np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != pairs.size:
        raise ValueError(f"scores must be (s, {pairs.size}); got {s.shape}")
    y = _as_1d("labels", labels, np.bool_, pairs.size)
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
