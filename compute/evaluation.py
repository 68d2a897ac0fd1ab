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

The metrics themselves are :mod:`compute.ranking_metrics`'s.

Baselines: :func:`reciprocal_popularity` (like rates over the *visible* decisions only; its
forward part ``give_rate(a) · receive_rate(b)`` is the one-sided baseline); random order and
rating quality alone are built by the caller from an ``rng`` and the production scorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import arrays, ranking_metrics
from compute.arrays import BoolArray, FloatArray, IntArray

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
    u = arrays.as_1d("user_ids", user_ids, np.int64)
    t = arrays.as_1d("target_ids", target_ids, np.int64, u.size)
    ok = arrays.as_1d("eligible", eligible, np.bool_, u.size) & (u != t)
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
    a = arrays.as_1d("a_ids", a_ids, np.int64)
    b = arrays.as_1d("b_ids", b_ids, np.int64, a.size)
    lo_p = arrays.as_1d("pair_lo", pair_lo, np.int64)
    hi_p = arrays.as_1d("pair_hi", pair_hi, np.int64, lo_p.size)
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
    lo = arrays.as_1d("pair_lo", pair_lo, np.int64)
    hi = arrays.as_1d("pair_hi", pair_hi, np.int64, lo.size)
    u = arrays.as_1d("user_ids", user_ids, np.int64)
    t = arrays.as_1d("target_ids", target_ids, np.int64, u.size)
    like = arrays.as_1d("is_like", is_like, np.bool_, u.size)
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
    keep = arrays.as_1d("keep_pairs", keep_pairs, np.bool_, p)
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
    wanted = arrays.as_1d("ids", ids, np.int64)
    d = arrays.as_1d("decision_ids", decision_ids, np.int64)
    like = arrays.as_1d("is_like", is_like, np.bool_, d.size)
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
    a = arrays.as_1d("viewer_ids", viewer_ids, np.int64)
    b = arrays.as_1d("candidate_ids", candidate_ids, np.int64, a.size)
    u = arrays.as_1d("visible_user_ids", visible_user_ids, np.int64)
    t = arrays.as_1d("visible_target_ids", visible_target_ids, np.int64, u.size)
    like = arrays.as_1d("visible_is_like", visible_is_like, np.bool_, u.size)
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
        (:func:`compute.ranking_metrics.per_viewer`) ``viewer_auc_mutual``,
        ``viewer_ndcg_at_k_mutual``,
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
    s = arrays.as_1d("scores", scores, np.float64, len(rows))
    d = rows.decided
    mutual_rank = ranking_metrics.ranking_at_k(
        rows.viewer_ids, s, rows.mutual, k, rows.candidate_ids
    )
    like_rank = ranking_metrics.ranking_at_k(
        rows.viewer_ids[d], s[d], rows.liked[d], k, rows.candidate_ids[d]
    )
    mutual_viewer = ranking_metrics.per_viewer(
        rows.viewer_ids, s, rows.mutual, k, rows.candidate_ids
    )
    like_viewer = ranking_metrics.per_viewer(
        rows.viewer_ids[d], s[d], rows.liked[d], k, rows.candidate_ids[d]
    )
    values: dict[str, float | int] = {
        "auc_mutual": ranking_metrics.auc(s, rows.mutual),
        "auc_like": ranking_metrics.auc(s[d], rows.liked[d]),
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
        roc_mutual=ranking_metrics.roc_curve(s, rows.mutual),
        roc_like=ranking_metrics.roc_curve(s[d], rows.liked[d]),
    )
