"""Combine the pair signals into one score in [0, 1] and keep the top K per user.

For a pair (a = user, b = candidate), with the registered signals x_i of
:data:`compute.signals.SIGNALS` (missing ones replaced by their neutral value) and weights
w_i ≥ 0:

    s(a→b) = Σ_i w_i · x_i / Σ_i w_i                                     ∈ [0, 1]

Reciprocal fusion (``reciprocal=True``) also scores b→a (b's preferences about a) and
combines them:

    harmonic   = 2 · s_ab · s_ba / (s_ab + s_ba)   (0 when both are 0)
    geometric  = √(s_ab · s_ba)
    min        = min(s_ab, s_ba)
    calibrated           = √(P(a likes b) · P(b likes a))       (geometric of the two)
    calibrated_harmonic  = harmonic of P(a likes b) and P(b likes a)
    calibrated_min       = min(P(a likes b), P(b likes a))
                 P(v likes c) = σ(intercept + scale · s(v→c) + viewer_rate · g_v)

The ``calibrated*`` fusions read each direction's score as the like model ``matchjobs
tune`` fitted (:class:`Calibration`): the fitted logit of the weighted signals plus the
viewer's own like rate given ``g_v`` (the likes job's shrunk rate; ``default_rate`` where
unknown), and then combine the two like probabilities as the plain fusion of their name
does. The product (``calibrated``) is the probability of a mutual like when the two
decisions are independent given the signals and the model is calibrated; harmonic and min
let the less likely side weigh more, which ranks mutual likes better when the fitted
probabilities are too confident at the extremes — ``tune`` chooses among them on its
validation pairs. How readily the *candidate* says yes — constant within one viewer's own
decisions, so no weight of a one-sided score can carry it — enters through P(b likes a).
The square root keeps the scale of a probability; it does not change the order.

With a calibration and fusion off (``reciprocal=False``), the score is the one-sided like
probability P(a likes b): the same order of each user's candidates as s(a→b), on the scale
of a probability, so scores are comparable across users.

Optional factors, off by default:

* dormancy: × 0.5 ** (max(inactive_days_b − grace_days, 0) / half_life_days)
  (NaN inactive_days → 1);
* exposure cap: × ``exposure_factor`` for candidates that appear in more than
  ``exposure_cap`` users' top K. Exact exposure needs *global* counts: the jobs layer
  scores every shard once without the cap, sums :func:`exposure_counts` over shards,
  and passes the total as ``exposure_counts`` to a second pass. Without it the counts
  of the current call (one shard) are used, which under-counts.

The final score is clipped to [0, 1] and is never NaN. Top K per user is ordered by
score descending, ties broken by the exposure spread — :func:`compute.sorting.spread_keys`
of (user id, candidate id, ``spread_seed``), never by candidate id, so equal scores do not
all go to the lowest ids — deterministic, and identical whether a user is scored alone or
inside a shard, and the same as the block path's cut and the API's ORDER BY.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from compute import filters, signals, sorting
from compute.arrays import FloatArray
from compute.population import Population

Fusion = Literal[
    "harmonic", "geometric", "min", "calibrated", "calibrated_harmonic", "calibrated_min"
]
# Each calibrated fusion → the plain fusion it applies to the two like probabilities.
CALIBRATED_FUSIONS: dict[str, str] = {
    "calibrated": "geometric",
    "calibrated_harmonic": "harmonic",
    "calibrated_min": "min",
}
FUSIONS: tuple[str, ...] = ("harmonic", "geometric", "min", *CALIBRATED_FUSIONS)


def is_calibrated(fusion: str | None) -> bool:
    """Whether ``fusion`` reads both directions through a fitted :class:`Calibration`."""
    return fusion in CALIBRATED_FUSIONS


@dataclass(frozen=True)
class Calibration:
    """The fitted like model behind the ``calibrated*`` fusions (see the module docstring).

    Attributes
    ----------
    intercept : float
    scale : float > 0
        The sum of the fitted signal coefficients: ``scale · s`` is their logit term.
    viewer_rate : float ≥ 0
        Coefficient of the viewer's like rate given.
    default_rate : float in [0, 1]
        The rate of a viewer the likes job has none for.
    """

    intercept: float
    scale: float
    viewer_rate: float
    default_rate: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.intercept):
            raise ValueError(f"intercept must be finite; got {self.intercept!r}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0; got {self.scale!r}")
        if not (np.isfinite(self.viewer_rate) and self.viewer_rate >= 0):
            raise ValueError(f"viewer_rate must be finite and ≥ 0; got {self.viewer_rate!r}")
        if not 0.0 <= self.default_rate <= 1.0:
            raise ValueError(f"default_rate must be in [0, 1]; got {self.default_rate!r}")

    def like_probability(
        self, scores: npt.NDArray[np.floating], rates: npt.NDArray[np.floating]
    ) -> npt.NDArray[np.floating]:
        """σ(intercept + scale · scores + viewer_rate · rates), in the scores' dtype."""
        logit = self.intercept + self.scale * scores + self.viewer_rate * rates
        out: npt.NDArray[np.floating] = special.expit(logit).astype(scores.dtype, copy=False)
        return out


def viewer_rates(pop: Population, rows: npt.NDArray[np.integer], default: float) -> FloatArray:
    """The like rate given of the users at ``rows`` (any shape), ``default`` where unknown."""
    if pop.like_rate_given is None or pop.has_like_rate is None:
        return np.full(np.shape(rows), default, dtype=np.float64)
    rates = pop.like_rate_given[rows].astype(np.float64)
    known = pop.has_like_rate[rows] & np.isfinite(rates)
    return np.where(known, np.clip(rates, 0.0, 1.0), default)


@dataclass(frozen=True, init=False)
class SignalWeights:
    """Non-negative weight per registered signal (normalized by their sum when scoring).

    ``SignalWeights(quiz=0.3, proximity=0.1)``: keyword per signal name of
    :data:`compute.signals.SIGNALS`; an omitted signal keeps its registered default weight.
    """

    values: tuple[float, ...]

    def __init__(self, **weights: float) -> None:
        unknown = sorted(set(weights) - set(signals.SIGNAL_NAMES))
        if unknown:
            raise ValueError(f"weights must be among {signals.SIGNAL_NAMES}; got {unknown}")
        values = tuple(weights.get(s.name, s.weight) for s in signals.SIGNALS)
        for name, value in zip(signals.SIGNAL_NAMES, values, strict=True):
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ValueError(f"weights.{name} must be a finite number ≥ 0; got {value!r}")
        if sum(values) <= 0:
            raise ValueError("weights must not all be 0")
        object.__setattr__(self, "values", values)

    @classmethod
    def only(cls, name: str) -> SignalWeights:
        """Weight 1 on signal ``name`` and 0 on every other one."""
        return cls(**{s.name: float(s.name == signals.signal(name).name) for s in signals.SIGNALS})

    def __getitem__(self, name: str) -> float:
        return self.values[signals.index(name)]

    def as_array(self) -> npt.NDArray[np.float64]:
        """(n_signals,) float64 weights in :data:`compute.signals.SIGNAL_NAMES` order, sum 1."""
        raw = np.array(self.values, dtype=np.float64)
        normalized: npt.NDArray[np.float64] = raw / raw.sum()
        return normalized


@dataclass(frozen=True)
class ScoreParams:
    """Everything that shapes the score (filled from YAML).

    Attributes
    ----------
    weights : SignalWeights
    signal_params : SignalParams
    neutral : float in [0, 1]
        Value used for a missing signal (unless the signal sets its own).
    top_k : int ≥ 1
        Pairs kept per user.
    reciprocal : bool
        Score both directions and fuse them with ``fusion``.
    fusion : {"harmonic", "geometric", "min"}
    dormancy : bool
        Apply the candidate dormancy decay.
    dormancy_grace_days, dormancy_half_life_days : float
    exposure_cap : int or None
        None = off; else the number of top-K appearances above which a candidate is
        penalized.
    exposure_factor : float in [0, 1]
    spread_seed : int
        Seed of the tie-break (:func:`compute.sorting.spread_keys`); the match job uses
        :func:`compute.sorting.spread_seed` of the algorithm version.
    calibration : Calibration or None
        The like model of the ``calibrated*`` fusions (required by them, unused otherwise).
    """

    weights: SignalWeights = field(default_factory=SignalWeights)
    signal_params: signals.SignalParams = field(default_factory=signals.SignalParams)
    neutral: float = 0.5
    top_k: int = 200
    reciprocal: bool = True
    fusion: Fusion = "harmonic"
    dormancy: bool = False
    dormancy_grace_days: float = 14.0
    dormancy_half_life_days: float = 30.0
    exposure_cap: int | None = None
    exposure_factor: float = 0.5
    spread_seed: int = 0
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.neutral <= 1.0:
            raise ValueError(f"neutral must be in [0, 1]; got {self.neutral!r}")
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise ValueError(f"top_k must be an int ≥ 1; got {self.top_k!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {self.fusion!r}")
        if is_calibrated(self.fusion) and self.calibration is None:
            raise ValueError(
                f"fusion {self.fusion!r} needs a calibration (matchjobs tune fits one)"
            )
        if not self.dormancy_grace_days >= 0:
            raise ValueError(f"dormancy_grace_days must be ≥ 0; got {self.dormancy_grace_days!r}")
        if not self.dormancy_half_life_days > 0:
            raise ValueError(
                f"dormancy_half_life_days must be > 0; got {self.dormancy_half_life_days!r}"
            )
        if self.exposure_cap is not None and not (
            isinstance(self.exposure_cap, int) and self.exposure_cap >= 0
        ):
            raise ValueError(f"exposure_cap must be None or an int ≥ 0; got {self.exposure_cap!r}")
        if not 0.0 <= self.exposure_factor <= 1.0:
            raise ValueError(f"exposure_factor must be in [0, 1]; got {self.exposure_factor!r}")


@dataclass(frozen=True, eq=False)
class ScoredPairs:
    """The kept pairs of one scoring call, sorted by (user row, rank).

    Attributes
    ----------
    user_rows, cand_rows : (m,) int64
    rank : (m,) int32
        0-based rank within the user's list.
    score : (m,) float32 in [0, 1], never NaN
        Final score (fused, times dormancy and exposure factors).
    forward_score, reverse_score : (m,) float32
        s(a→b) and s(b→a) before fusion (reverse = forward when not reciprocal).
    subscores : (m, n_signals) float32
        a→b signals, missing ones replaced by their neutral value; columns in
        :data:`compute.signals.SIGNAL_NAMES` order.
    missing : (m,) uint8
        Bit i set ⇔ signal i was missing.
    weights : (n_signals,) float64
        Normalized weights used (for reasons).
    shared_interest_ids : (m, 3) int64, -1 padded
    distance_km : (m,) float32, -1 when unknown
    """

    user_rows: npt.NDArray[np.int64]
    cand_rows: npt.NDArray[np.int64]
    rank: npt.NDArray[np.int32]
    score: npt.NDArray[np.float32]
    forward_score: npt.NDArray[np.float32]
    reverse_score: npt.NDArray[np.float32]
    subscores: npt.NDArray[np.float32]
    missing: npt.NDArray[np.uint8]
    weights: npt.NDArray[np.float64]
    shared_interest_ids: npt.NDArray[np.int64]
    distance_km: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.user_rows.size)

    def subscore(self, name: str) -> npt.NDArray[np.float32]:
        """(m,) float32 subscore of one signal by name."""
        if name not in signals.SIGNAL_NAMES:
            raise ValueError(f"name must be one of {signals.SIGNAL_NAMES}; got {name!r}")
        return self.subscores[:, signals.SIGNAL_NAMES.index(name)]


def combine(
    values: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    neutral: float | npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Weighted mean of signals with missing → neutral.

    Parameters
    ----------
    values : (p, n_signals) float64, NaN = missing
    weights : (n_signals,) float64, summing to 1
    neutral : float or (n_signals,) float64

    Returns
    -------
    (p,) float64 in [0, 1]: ``Σ_i w_i · (x_i if present else neutral)``
    """
    filled = np.where(np.isnan(values), neutral, values)
    return np.clip(filled @ weights, 0.0, 1.0)


def fuse(
    forward: npt.NDArray[np.floating],
    reverse: npt.NDArray[np.floating] | None,
    fusion: str,
    calibration: Calibration | None = None,
    forward_rates: npt.NDArray[np.floating] | None = None,
    reverse_rates: npt.NDArray[np.floating] | None = None,
) -> npt.NDArray[np.floating]:
    """The final score from both directions' scores (see module docstring); inputs in [0, 1].

    ``reverse`` None is fusion off: ``forward`` itself, or P(a likes b) under a calibrated
    fusion. Any shape and float dtype (the pair path fuses (p,) float64, the block path
    (q, c) float32 matrices); the inputs are left unchanged. The calibrated fusions also
    need the calibration and the like rates of each direction's viewer (a's for a→b, b's
    for b→a), broadcastable to the scores (:func:`fusion_rates`).
    """
    if is_calibrated(fusion):
        if calibration is None or forward_rates is None:
            raise ValueError(f"fusion {fusion!r} needs the calibration and the viewers' rates")
        forward_like = calibration.like_probability(forward, forward_rates)
        if reverse is None:
            return forward_like
        if reverse_rates is None:
            raise ValueError(f"fusion {fusion!r} needs the candidates' rates too")
        reverse_like = calibration.like_probability(reverse, reverse_rates)
        return fuse(forward_like, reverse_like, CALIBRATED_FUSIONS[fusion])
    if reverse is None:
        return forward
    if fusion == "harmonic":
        total = forward + reverse
        product = forward * reverse
        product *= 2.0  # exact: 2·(f·r) = (2·f)·r
        out = np.zeros_like(total)
        np.divide(product, total, out=out, where=total > 0)
        return out
    if fusion == "geometric":
        product = forward * reverse
        return np.sqrt(product, out=product)
    if fusion == "min":
        smaller: npt.NDArray[np.floating] = np.minimum(forward, reverse)
        return smaller
    raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}")


def fusion_rates(
    pop: Population,
    viewer_rows: npt.NDArray[np.integer],
    candidate_rows: npt.NDArray[np.integer],
    params: ScoreParams,
) -> tuple[FloatArray | None, FloatArray | None]:
    """The viewers' like rates :func:`fuse` needs for ``params.fusion`` (None, None unless
    calibrated): a's for the forward scores, b's for the reverse ones."""
    if not is_calibrated(params.fusion) or params.calibration is None:
        return None, None
    default = params.calibration.default_rate
    return viewer_rates(pop, viewer_rows, default), viewer_rates(pop, candidate_rows, default)


def dormancy_factor(
    inactive_days: npt.NDArray[np.float32], grace_days: float, half_life_days: float
) -> npt.NDArray[np.float64]:
    """(p,) float64 ``0.5 ** (max(inactive_days − grace, 0) / half_life)``; NaN days → 1."""
    days = inactive_days.astype(np.float64)
    beyond = np.where(np.isnan(days), 0.0, np.maximum(days - grace_days, 0.0))
    return np.power(0.5, beyond / half_life_days)


def exposure_counts(scored: ScoredPairs, n_users: int) -> npt.NDArray[np.int64]:
    """(n_users,) int64: in how many users' top K each row appears (sum these over shards)."""
    return np.bincount(scored.cand_rows, minlength=n_users).astype(np.int64)


def exposure_spread(counts: npt.NDArray[np.integer]) -> dict[str, float | int | None]:
    """How evenly the lists spread over the users who could be suggested.

    Parameters
    ----------
    counts : (n,) int
        Lists each eligible user appears in (:func:`exposure_counts`, summed over shards).

    Returns
    -------
    dict
        ``users`` (n), ``never_suggested_share`` (share with 0 appearances),
        ``appearances_p50``, ``appearances_p99``, ``appearances_max``,
        ``appearances_mean`` and ``gini`` (0 = every user in as many lists, → 1 = all
        slots to one user); the shares and Gini are None when nothing was suggested.
    """
    x = np.sort(np.asarray(counts, dtype=np.int64))
    n = int(x.size)
    total = int(x.sum())
    if n == 0:
        return {
            "users": 0,
            "never_suggested_share": None,
            "appearances_p50": None,
            "appearances_p99": None,
            "appearances_max": None,
            "appearances_mean": None,
            "gini": None,
        }
    ranks = np.arange(1, n + 1, dtype=np.float64)
    gini = float(((2 * ranks - n - 1) * x).sum() / (n * total)) if total else None
    return {
        "users": n,
        "never_suggested_share": round(float((x == 0).mean()), 5),
        "appearances_p50": round(float(np.percentile(x, 50)), 3),
        "appearances_p99": round(float(np.percentile(x, 99)), 3),
        "appearances_max": int(x[-1]),
        "appearances_mean": round(total / n, 3),
        "gini": None if gini is None else round(gini, 5),
    }


def top_k_order(
    user_rows: npt.NDArray[np.int64],
    score: npt.NDArray[np.float32],
    ties: npt.NDArray[np.int64],
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """Indices of the top ``k`` pairs per user and their ranks.

    Order: user row ascending, score descending, ``ties`` ascending (the pairs'
    :func:`compute.sorting.spread_keys`, the same as the block path's cut).

    Returns
    -------
    (indices, ranks) : (m,) int64 and (m,) int32
    """
    order = _pair_order(user_rows, score, ties)
    sorted_users = user_rows[order]
    first = np.r_[True, sorted_users[1:] != sorted_users[:-1]] if order.size else np.empty(0, bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    rank = np.arange(order.size) - group_start
    keep = rank < k
    return order[keep].astype(np.int64), rank[keep].astype(np.int32)


def _pair_order(
    user_rows: npt.NDArray[np.int64],
    score: npt.NDArray[np.float32],
    ties: npt.NDArray[np.int64],
) -> npt.NDArray[np.intp]:
    """``np.lexsort((ties, -score, user_rows))``.

    Candidate pools come grouped by ascending user row: numbering those groups 0, 1, …
    keeps the keys small for a packed sort.
    """
    if user_rows.size < 2 or not bool((user_rows[1:] >= user_rows[:-1]).all()):
        return np.lexsort((ties, -score, user_rows))
    groups = np.zeros(user_rows.size, dtype=np.int64)
    np.cumsum(user_rows[1:] != user_rows[:-1], out=groups[1:])
    return sorting.group_value_order(groups, score, ties)


def score_pairs(
    pop: Population,
    user_rows: npt.ArrayLike,
    cand_rows: npt.ArrayLike,
    params: ScoreParams | None = None,
    *,
    exposure_counts: npt.NDArray[np.int64] | None = None,
) -> ScoredPairs:
    """Score already-filtered pairs and keep the top K per user.

    Parameters
    ----------
    pop : Population
    user_rows, cand_rows : (p,) int
        Aligned pairs (user a, candidate b); should be distinct pairs that passed
        :func:`compute.filters.mutual_filter`.
    params : ScoreParams, optional
    exposure_counts : (n_users,) int, optional
        Global top-K appearance counts from a first pass (used only when
        ``params.exposure_cap`` is set).

    Returns
    -------
    ScoredPairs
    """
    params = params or ScoreParams()
    a, b = filters.check_pairs(pop, user_rows, cand_rows)
    if exposure_counts is not None:
        exposure_counts = np.asarray(exposure_counts)
        if exposure_counts.shape != (pop.n_users,):
            raise ValueError(
                f"exposure_counts must be ({pop.n_users},); got {exposure_counts.shape}"
            )
    weights = params.weights.as_array()
    neutral = signals.neutral_values(params.neutral)
    sig = signals.compute_signals(pop, a, b, params.signal_params, with_reverse=params.reciprocal)
    forward = combine(sig.values, weights, neutral)
    rates = fusion_rates(pop, a, b, params)
    if sig.reverse_values is not None:
        reverse = combine(sig.reverse_values, weights, neutral)
        fused = fuse(forward, reverse, params.fusion, params.calibration, *rates)
    else:
        reverse = forward
        fused = fuse(forward, None, params.fusion, params.calibration, *rates)
    if params.dormancy:
        fused = fused * dormancy_factor(
            pop.inactive_days[b], params.dormancy_grace_days, params.dormancy_half_life_days
        )
    score = np.clip(np.nan_to_num(fused, nan=0.0), 0.0, 1.0).astype(np.float32)
    ties = sorting.spread_keys(pop.user_ids[a], pop.user_ids[b], params.spread_seed)

    if params.exposure_cap is not None:
        if exposure_counts is None:
            idx, _ = top_k_order(a, score, ties, params.top_k)
            exposure_counts = np.bincount(b[idx], minlength=pop.n_users)
        over = exposure_counts[b] > params.exposure_cap
        score = np.where(over, score * np.float32(params.exposure_factor), score).astype(np.float32)

    idx, rank = top_k_order(a, score, ties, params.top_k)
    missing_bits = np.isnan(sig.values[idx]) @ (1 << np.arange(len(signals.SIGNAL_NAMES)))
    subscores = np.where(np.isnan(sig.values[idx]), neutral, sig.values[idx])
    distance = sig.distance_km[idx]
    return ScoredPairs(
        user_rows=a[idx],
        cand_rows=b[idx],
        rank=rank,
        score=score[idx],
        forward_score=forward[idx].astype(np.float32),
        reverse_score=reverse[idx].astype(np.float32),
        subscores=subscores.astype(np.float32),
        missing=missing_bits.astype(np.uint8),
        weights=weights,
        shared_interest_ids=sig.shared_interest_ids[idx],
        distance_km=np.where(np.isnan(distance), -1.0, distance).astype(np.float32),
    )
