"""The pair signals: one registry, each signal's formula written once.

:data:`SIGNALS` is the ordered registry. A :class:`Signal` names

* a *kernel* — the raw quantity it is computed from: the cosine of two per-user vectors
  (:class:`Cosine`), the weighted interest overlap (:class:`InterestOverlap`), the
  distance (:class:`Distance`) or a value of the candidate alone (:class:`CandidateValue`);
* its *formula* — raw quantity → signal in [0, 1], NaN where the input counts as missing.
  A formula is plain numpy over arrays of any shape, so the same function serves the
  pair path ((p,) arrays, :func:`compute_signals`, used by :func:`compute.scoring.score_pairs`)
  and the block path ((q, c) matrices, :mod:`compute.blockterms`, used by
  :func:`compute.blockscore.rank_block`). It may work in place on its argument;
* its default weight, its neutral value (``None``: the configured ``signals.neutral_value``),
  and its reason: code, text and the minimum subscore for it to be offered.

Both paths, :mod:`compute.reasons`, ``SignalWeights``, the config's ``weights:`` model and
the tools (``explain``, ``report``, ``evaluate``) iterate :data:`SIGNALS`; none names a
signal. Adding a signal is therefore one :class:`Signal` entry here, plus

* its weight under ``weights:`` in ``configs/default.yaml`` (the key is ``Signal.key``)
  and in the README's config key table (a test checks every key is documented);
* a migration adding the column ``match_scores.s_<key>`` and the key in
  ``jobs.storage.schema.SUBSCORE_COLUMNS`` (a test checks that both follow this registry);
* only if it needs one: a new field of :class:`compute.population.Population` (and its
  loader), a new :class:`SignalParams` field (and its YAML key), or a new kernel (its pair
  evaluation below and its block evaluation in :mod:`compute.blockterms`).

The current signals (a = user, b = candidate):

* quiz:           (1 + cos(q_a, q_b)) / 2. Missing when either has no (or a zero) quiz vector.
* interest:       Σ_{i ∈ I_a ∩ I_b} min(w_a,i, w_b,i), clipped to [0, 1].
  Missing when either has no interests.
* rating_quality: rating_quality_b, clipped to [0, 1]. Missing when b has none.
* rating_fit:     0.5 + 0.5 · cos(pref_a, dims_b).
  Missing when a has no preference, or either vector is zero.
* newness:        0.5 ** (max(account_age_days_b, 0) / half_life_days).
  Missing when the account age is NaN.
* proximity:      exp(−d_km / scale_km). Missing when either has no location.
* appeal:         (1 + clip(taste_a · appeal_b, −1, 1)) / 2 — how likely a is to like b
  (the likes job's model: a's like rate given and b's received, plus taste; see
  ``compute.likes``). Missing when a has no taste or b no appeal vector (too few decisions).
* reciprocity:    (1 + clip(taste_b · appeal_a, −1, 1)) / 2 — how likely b is to like a
  back (b's like rate given and a's received, plus b's taste). Missing when b has no taste
  or a no appeal vector.

Symmetric signals (a cosine of one vector with itself, interests, distance) are computed
once for both directions; the others are directional (the reverse direction swaps a and b).
The reference in ``tests/unit/compute/reference.py`` is a deliberately separate, plain-loop
implementation: a test oracle, not production code.

Why one file of ~680 lines: the registry is the one place a signal is written (kernel,
formula, neutral value, reason text, default weight); splitting kernels, formulas and
registry apart would make adding a signal a change in three files again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import filters, sorting
from compute.arrays import BoolArray, FloatArray
from compute.population import Population

N_SHARED_INTERESTS = 3
# Dense scratch for interest overlap: unique users × catalogue size, in float32 cells.
_DENSE_BUDGET_CELLS = 1 << 24

# What a formula takes and gives: float32 blocks (compute.blockterms), float64 pairs.
AnyFloatArray = npt.NDArray[np.floating]
RowArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SignalParams:
    """Transforms of the signals (filled from YAML).

    Attributes
    ----------
    newness_half_life_days : float > 0
        Account age at which newness is 0.5.
    proximity_scale_km : float > 0
        Distance at which proximity is 1/e ≈ 0.37.
    """

    newness_half_life_days: float = 30.0
    proximity_scale_km: float = 25.0

    def __post_init__(self) -> None:
        for name in ("newness_half_life_days", "proximity_scale_km"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


# ------------------------------------------------------------------------------ kernels


@dataclass(frozen=True)
class Cosine:
    """cos(left_a, right_b) of two per-user vector fields of the population, in [-1, 1].

    Missing where a ``*_present`` mask (a bool field; None = always) is False or a vector
    is zero or not finite.
    """

    left: str
    right: str
    left_present: str | None = None
    right_present: str | None = None

    @property
    def symmetric(self) -> bool:
        return self.left == self.right and self.left_present == self.right_present


@dataclass(frozen=True)
class Dot:
    """⟨left_a, right_b⟩ of two per-user vector fields (not normalized: the likes job's
    taste · appeal is a reconstruction of a's decision about b, its size is the evidence).

    Missing where a ``*_present`` mask is False or the dot is not finite.
    """

    left: str
    right: str
    left_present: str
    right_present: str

    @property
    def symmetric(self) -> bool:
        return self.left == self.right and self.left_present == self.right_present


@dataclass(frozen=True)
class InterestOverlap:
    """Σ_{i ∈ I_a ∩ I_b} min(w_a,i, w_b,i); missing when either has no interests."""

    symmetric = True


@dataclass(frozen=True)
class Distance:
    """Great-circle distance in km; missing when either lacks a location."""

    symmetric = True


@dataclass(frozen=True)
class CandidateValue:
    """A per-user float field of the candidate alone (float64); missing where ``present``
    (a bool field; None = always) is False."""

    field: str
    present: str | None = None
    symmetric = False


Kernel = Cosine | Dot | InterestOverlap | Distance | CandidateValue
Formula = Callable[[AnyFloatArray, SignalParams], AnyFloatArray]


# ------------------------------------------------------------------------------ formulas
# Each maps a kernel's raw value to [0, 1] (NaN = missing), over arrays of any shape and
# float dtype, and may overwrite its argument.


def half_cosine(cos: AnyFloatArray, params: SignalParams) -> AnyFloatArray:
    """(1 + cos) / 2, computed as 0.5 · cos + 0.5 (the same number: halving is exact)."""
    cos *= 0.5
    cos += 0.5
    return cos


def half_dot(dot: AnyFloatArray, params: SignalParams) -> AnyFloatArray:
    """(1 + clip(dot, −1, 1)) / 2: taste · appeal reconstructs a like as +1 and a pass as −1
    (``likes.pass_weight`` 1), so this is its linear estimate of P(like | a decision), and
    0 (the model knows nothing) is 0.5."""
    np.clip(dot, -1.0, 1.0, out=dot)
    return half_cosine(dot, params)


def clip_unit(value: AnyFloatArray, params: SignalParams) -> AnyFloatArray:
    """clip(value, 0, 1)."""
    return np.clip(value, 0.0, 1.0, out=value)


def finite_unit(value: AnyFloatArray, params: SignalParams) -> AnyFloatArray:
    """clip(value, 0, 1) where finite, else NaN (missing)."""
    return np.where(np.isfinite(value), np.clip(value, 0.0, 1.0), np.nan)


def half_life(days: AnyFloatArray, params: SignalParams) -> AnyFloatArray:
    """0.5 ** (max(days, 0) / newness_half_life_days); NaN (and −inf) days are missing."""
    ok = np.isfinite(days) | (days == np.inf)
    safe = np.where(ok, np.maximum(days, 0.0), 0.0)
    return np.where(ok, np.power(0.5, safe / params.newness_half_life_days), np.nan)


def distance_decay(distance_km: AnyFloatArray, params: SignalParams) -> AnyFloatArray:
    """exp(−distance / proximity_scale_km)."""
    np.divide(distance_km, -params.proximity_scale_km, out=distance_km)
    return np.exp(distance_km, out=distance_km)


# ------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Signal:
    """One signal: what it is computed from, its formula, weight, neutral value and reason.

    Attributes
    ----------
    name : str
        Name in compute/ (``SignalWeights``, ``ScoredPairs.subscore``, reasons, explain).
    key : str
        Key of its weight under ``weights:`` in YAML and of its column ``s_<key>``.
    kernel : Kernel
    formula : callable (raw, SignalParams) -> values
    weight : float ≥ 0
        Default weight (``configs/default.yaml`` states it too).
    reason_code : str
    reason_text : str or None
        The reason's sentence; None for the two reasons :mod:`compute.reasons` words from
        the pair's data (shared interests, distance).
    reason_min : float
        Minimum subscore for the signal to be offered as a reason.
    neutral : float in [0, 1] or None
        Value of the signal when missing; None = the configured ``signals.neutral_value``.
    """

    name: str
    key: str
    kernel: Kernel
    formula: Formula
    weight: float
    reason_code: str
    reason_text: str | None
    reason_min: float
    neutral: float | None = None

    @property
    def symmetric(self) -> bool:
        return self.kernel.symmetric


SIGNALS: tuple[Signal, ...] = (
    Signal(
        name="quiz",
        key="quiz",
        kernel=Cosine("quiz_vectors", "quiz_vectors", "has_quiz", "has_quiz"),
        formula=half_cosine,
        weight=0.15,
        reason_code="quiz_match",
        reason_text="Your quiz answers line up closely",
        reason_min=0.75,
    ),
    Signal(
        name="interest",
        key="interests",
        kernel=InterestOverlap(),
        formula=clip_unit,
        weight=0.10,
        reason_code="shared_interests",
        reason_text=None,
        reason_min=0.15,
    ),
    Signal(
        name="rating_quality",
        key="rating_quality",
        kernel=CandidateValue("rating_quality", "has_rating_quality"),
        formula=finite_unit,
        weight=0.10,
        reason_code="highly_rated",
        reason_text="Highly rated by people they've met",
        reason_min=0.7,
    ),
    Signal(
        name="rating_fit",
        key="rating_fit",
        # Unit vectors: 0.5 + 0.5·cos is in [0, 1] without a clip.
        kernel=Cosine("rating_preferences", "rating_dims", "has_preference", None),
        formula=half_cosine,
        weight=0.10,
        reason_code="rating_fit",
        reason_text="Has the qualities you rate highly",
        reason_min=0.7,
    ),
    Signal(
        name="newness",
        key="newness",
        kernel=CandidateValue("account_age_days"),
        formula=half_life,
        weight=0.05,
        reason_code="new_here",
        reason_text="New here",
        reason_min=0.5,
    ),
    Signal(
        name="proximity",
        key="proximity",
        kernel=Distance(),
        formula=distance_decay,
        weight=0.10,
        reason_code="nearby",
        reason_text=None,
        reason_min=0.3,
    ),
    Signal(
        name="appeal",
        key="appeal",
        kernel=Dot("taste_vectors", "appeal_vectors", "has_taste", "has_appeal"),
        formula=half_dot,
        weight=0.20,
        reason_code="your_type",
        reason_text="Liked by people whose likes match yours",
        reason_min=0.6,
    ),
    Signal(
        name="reciprocity",
        key="reciprocity",
        # b's decision about a: taste_b · appeal_a, i.e. ⟨appeal_a, taste_b⟩.
        kernel=Dot("appeal_vectors", "taste_vectors", "has_appeal", "has_taste"),
        formula=half_dot,
        weight=0.20,
        reason_code="likely_mutual",
        reason_text="Likely to like you back",
        reason_min=0.6,
    ),
)
SIGNAL_NAMES: tuple[str, ...] = tuple(s.name for s in SIGNALS)
SIGNAL_KEYS: tuple[str, ...] = tuple(s.key for s in SIGNALS)
SYMMETRIC_SIGNALS: frozenset[str] = frozenset(s.name for s in SIGNALS if s.symmetric)


def signal(name: str) -> Signal:
    """The registered signal called ``name``."""
    for s in SIGNALS:
        if s.name == name:
            return s
    raise ValueError(f"name must be one of {SIGNAL_NAMES}; got {name!r}")


def index(name: str) -> int:
    """Column of signal ``name`` in every per-signal array (registry order)."""
    return SIGNAL_NAMES.index(signal(name).name)


def neutral_values(neutral: float) -> FloatArray:
    """(n_signals,) float64 value of each signal when missing (``neutral`` where unset)."""
    return np.array([neutral if s.neutral is None else s.neutral for s in SIGNALS])


def cosine_fields() -> tuple[tuple[str, str | None], ...]:
    """Every (vector field, presence field) a registered cosine kernel reads, once."""
    seen: dict[tuple[str, str | None], None] = {}
    for s in SIGNALS:
        if isinstance(s.kernel, Cosine):
            seen[(s.kernel.left, s.kernel.left_present)] = None
            seen[(s.kernel.right, s.kernel.right_present)] = None
    return tuple(seen)


def dot_fields() -> tuple[tuple[str, str], ...]:
    """Every (vector field, presence field) a registered dot kernel reads, once."""
    seen: dict[tuple[str, str], None] = {}
    for s in SIGNALS:
        if isinstance(s.kernel, Dot):
            seen[(s.kernel.left, s.kernel.left_present)] = None
            seen[(s.kernel.right, s.kernel.right_present)] = None
    return tuple(seen)


def unit_rows(
    vectors: npt.NDArray[np.float32], present: BoolArray
) -> tuple[npt.NDArray[np.float32], BoolArray]:
    """L2-normalize rows.

    Parameters
    ----------
    vectors : (n, d) float32
    present : (n,) bool

    Returns
    -------
    unit : (n, d) float32, C-contiguous
        ``v / ‖v‖``; zero rows where not valid.
    valid : (n,) bool
        ``present`` and a finite, non-zero norm.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
    valid = present & np.isfinite(norms) & (norms > 0)
    safe = np.where(valid, norms, 1.0)
    unit = np.where(valid[:, None], vectors / safe[:, None], 0.0)
    return np.ascontiguousarray(unit, dtype=np.float32), valid


def _cosine(
    left: npt.NDArray[np.float32], right: npt.NDArray[np.float32]
) -> tuple[FloatArray, BoolArray]:
    """Row-wise cosine of (p, d) arrays; NaN + False where either norm is 0 or not finite."""
    dots = np.einsum("ij,ij->i", left, right, dtype=np.float64)
    norm_l = np.sqrt(np.einsum("ij,ij->i", left, left, dtype=np.float64))
    norm_r = np.sqrt(np.einsum("ij,ij->i", right, right, dtype=np.float64))
    denom = norm_l * norm_r
    ok = np.isfinite(dots) & np.isfinite(denom) & (denom > 0)
    cos = np.full(dots.shape, np.nan)
    cos[ok] = np.clip(dots[ok] / denom[ok], -1.0, 1.0)
    return cos, ok


def interest_overlap(
    pop: Population, a_rows: RowArray, b_rows: RowArray, n_shared: int = N_SHARED_INTERESTS
) -> tuple[FloatArray, BoolArray, RowArray]:
    """The :class:`InterestOverlap` kernel and the top shared interests of each pair.

    ``overlap = Σ_{i ∈ I_a ∩ I_b} min(w_a,i, w_b,i)`` (weights sum to 1 per user, so 1
    means identical weighted interests; the interest signal clips it to [0, 1]).

    Returns
    -------
    values : (p,) float64, NaN where either user has no interests
    present : (p,) bool
    shared_ids : (p, n_shared) int64
        Shared interest ids by decreasing ``min(w_a, w_b)`` then increasing id; -1 pad.
    """
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    p = a.size
    counts = np.diff(pop.interest_indptr)
    present = (counts[a] > 0) & (counts[b] > 0)
    overlap = np.zeros(p, dtype=np.float64)
    shared = np.full((p, n_shared), -1, dtype=np.int64)
    n_codes = int(pop.interest_code_ids.size)
    if p == 0 or n_codes == 0 or not present.any():
        return np.where(present, overlap, np.nan), present, shared

    unique_a, local_a = np.unique(a, return_inverse=True)
    users_per_chunk = max(1, _DENSE_BUDGET_CELLS // n_codes)
    weights = np.nan_to_num(pop.interest_weights, nan=0.0)
    for start in range(0, unique_a.size, users_per_chunk):
        chunk_users = unique_a[start : start + users_per_chunk]
        # Dense weights of this chunk's a-users: dense[local, code] = w_a.
        dense = np.zeros((chunk_users.size, n_codes), dtype=np.float32)
        lengths = counts[chunk_users]
        entries = _segment_entries(pop.interest_indptr[chunk_users], lengths)
        dense[np.repeat(np.arange(chunk_users.size), lengths), pop.interest_codes[entries]] = (
            weights[entries]
        )
        pair_idx = np.flatnonzero((local_a >= start) & (local_a < start + chunk_users.size))
        b_lengths = counts[b[pair_idx]]
        b_entries = _segment_entries(pop.interest_indptr[b[pair_idx]], b_lengths)
        entry_pair = np.repeat(pair_idx, b_lengths)
        codes = pop.interest_codes[b_entries]
        contrib = np.minimum(dense[local_a[entry_pair] - start, codes], weights[b_entries])
        overlap += np.bincount(entry_pair, weights=contrib, minlength=p)
        hit = contrib > 0
        if hit.any():
            _top_shared(shared, entry_pair[hit], codes[hit], contrib[hit], pop.interest_code_ids)
    values = np.where(present, overlap, np.nan)
    return values, present, shared


def _segment_entries(starts: RowArray, lengths: npt.NDArray[np.int64]) -> RowArray:
    """Concatenated ``arange(start, start + length)`` for every segment, no Python loop."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def _top_shared(
    shared: RowArray,
    pair: RowArray,
    codes: npt.NDArray[np.int32],
    contrib: npt.NDArray[np.float32],
    code_ids: RowArray,
) -> None:
    """Write the top ``shared.shape[1]`` codes per pair into ``shared`` (in place)."""
    order = sorting.group_value_order(pair, contrib, codes)
    pair_sorted = pair[order]
    first = np.r_[True, pair_sorted[1:] != pair_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(pair_sorted.size), 0))
    rank = np.arange(pair_sorted.size) - group_start
    keep = rank < shared.shape[1]
    shared[pair_sorted[keep], rank[keep]] = code_ids[codes[order][keep]]


def present_mask(pop: Population, field: str | None, rows: RowArray) -> BoolArray:
    """Presence field ``field`` of ``rows`` (all True when ``field`` is None)."""
    if field is None:
        return np.ones(rows.shape, dtype=np.bool_)
    return np.asarray(getattr(pop, field))[rows].astype(np.bool_, copy=False)


def candidate_values(
    sig: Signal, pop: Population, rows: RowArray, params: SignalParams
) -> tuple[FloatArray, BoolArray]:
    """A :class:`CandidateValue` signal of ``rows`` as candidates: (values (NaN = missing), ok).

    Shared by the pair path (rows = the pairs' candidates) and the block path (rows = a
    block's candidates, or its query rows for the reverse direction).
    """
    kernel = sig.kernel
    if not isinstance(kernel, CandidateValue):
        raise TypeError(f"{sig.name} is not a candidate-value signal; its kernel is {kernel!r}")
    raw = np.asarray(getattr(pop, kernel.field))[rows].astype(np.float64)
    ok = present_mask(pop, kernel.present, rows)
    return _finish(sig, raw, ok, params)


def _finish(
    sig: Signal, raw: FloatArray, ok: BoolArray, params: SignalParams
) -> tuple[FloatArray, BoolArray]:
    values = sig.formula(raw, params)
    ok = ok & ~np.isnan(values)
    return np.where(ok, values, np.nan), ok


@dataclass(frozen=True, eq=False)
class _PairKernels:
    """Kernel results shared by the signals of one set of pairs (both directions)."""

    distance_km: FloatArray
    overlap: FloatArray
    overlap_ok: BoolArray


def _pair_values(
    sig: Signal,
    pop: Population,
    x: RowArray,
    y: RowArray,
    params: SignalParams,
    shared: _PairKernels,
) -> tuple[FloatArray, BoolArray]:
    """Signal ``sig`` of the pairs x → y: (p,) float64 (NaN = missing) and the present mask."""
    kernel = sig.kernel
    if isinstance(kernel, Cosine):
        left = np.asarray(getattr(pop, kernel.left))
        right = np.asarray(getattr(pop, kernel.right))
        cos, ok = _cosine(left[x], right[y])
        ok &= present_mask(pop, kernel.left_present, x) & present_mask(pop, kernel.right_present, y)
        return _finish(sig, cos, ok, params)
    if isinstance(kernel, Dot):
        left = np.asarray(getattr(pop, kernel.left))[x]
        right = np.asarray(getattr(pop, kernel.right))[y]
        dots = np.einsum("ij,ij->i", left, right, dtype=np.float64)
        ok = present_mask(pop, kernel.left_present, x) & present_mask(pop, kernel.right_present, y)
        return _finish(sig, dots, ok & np.isfinite(dots), params)
    if isinstance(kernel, InterestOverlap):
        return _finish(sig, shared.overlap.copy(), shared.overlap_ok, params)
    if isinstance(kernel, Distance):
        return _finish(sig, shared.distance_km.copy(), np.isfinite(shared.distance_km), params)
    return candidate_values(sig, pop, y, params)


def pair_signal(
    pop: Population,
    name: str,
    a_rows: npt.ArrayLike,
    b_rows: npt.ArrayLike,
    params: SignalParams | None = None,
) -> tuple[FloatArray, BoolArray]:
    """One signal of the pairs a → b: (p,) float64 with NaN where missing, and the mask."""
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    return _pair_values(signal(name), pop, a, b, params or SignalParams(), _kernels(pop, a, b)[0])


def _kernels(pop: Population, a: RowArray, b: RowArray) -> tuple[_PairKernels, RowArray]:
    overlap, overlap_ok, shared_ids = interest_overlap(pop, a, b)
    return (
        _PairKernels(filters.pair_distance_km(pop, a, b), overlap, overlap_ok),
        shared_ids,
    )


@dataclass(frozen=True, eq=False)
class PairSignals:
    """All signals of p pairs.

    Attributes
    ----------
    values : (p, n_signals) float64
        Columns in :data:`SIGNAL_NAMES` order, a → b direction; NaN = missing.
    reverse_values : (p, n_signals) float64 or None
        The b → a direction (only when requested).
    shared_interest_ids : (p, 3) int64
        Top shared interests, -1 padded.
    distance_km : (p,) float64
        NaN when either lacks a location.
    """

    values: FloatArray
    reverse_values: FloatArray | None
    shared_interest_ids: RowArray
    distance_km: FloatArray


def compute_signals(
    pop: Population,
    a_rows: npt.ArrayLike,
    b_rows: npt.ArrayLike,
    params: SignalParams | None = None,
    *,
    with_reverse: bool = False,
) -> PairSignals:
    """Compute every registered signal for the pairs, optionally in both directions.

    Parameters
    ----------
    pop : Population
    a_rows, b_rows : (p,) int
    params : SignalParams, optional
    with_reverse : bool
        Also compute the b → a direction (symmetric signals are reused).

    Returns
    -------
    PairSignals
    """
    params = params or SignalParams()
    a, b = filters.check_pairs(pop, a_rows, b_rows)
    shared, shared_ids = _kernels(pop, a, b)
    forward = [_pair_values(s, pop, a, b, params, shared)[0] for s in SIGNALS]
    values = np.column_stack(forward) if a.size else np.empty((0, len(SIGNALS)))
    reverse = None
    if with_reverse:
        backward = [
            forward[i] if s.symmetric else _pair_values(s, pop, b, a, params, shared)[0]
            for i, s in enumerate(SIGNALS)
        ]
        reverse = np.column_stack(backward) if a.size else np.empty((0, len(SIGNALS)))
    return PairSignals(
        values=values,
        reverse_values=reverse,
        shared_interest_ids=shared_ids,
        distance_km=shared.distance_km,
    )
