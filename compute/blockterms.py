"""The registered signals over a whole block: dense (query rows × candidates) weighted terms.

The block path of :mod:`compute.signals`: each kernel (cosine, interest overlap, distance,
candidate value) is evaluated here as a matrix — a matmul of unit vectors, a gather of the
candidates' dense interest weights, a distance from unit positions, a per-candidate vector —
and then goes through the *same* ``Signal.formula`` as the pair path, is weighted, and takes
the signal's neutral value where the kernel's row or column mask says it is missing. No
signal is named here: a new signal on an existing kernel needs no change in this module.

Terms are float32 (distances float64 until the formula), so a block score differs from
:func:`compute.scoring.score_pairs` by ~1e-6 at most; the block only ranks, the pair path
scores the kept pairs exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from compute import geo, signals
from compute.arrays import BoolArray
from compute.population import Population

RowArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class UserFeatures:
    """Score-parameter-free per-user inputs of the block terms and filters, for some rows.

    Built once per population (:func:`user_features`) and gathered per block, so a shard
    does not re-normalize the same candidates' vectors group after group.

    Attributes
    ----------
    unit : (m, D) float32
        The unit rows of every vector field a registered cosine kernel reads
        (:func:`compute.signals.cosine_fields`), side by side (0 rows where invalid).
    unit_ok : (m, n_fields) bool
        Whether each field's vector is present and non-zero.
    raw : (m, E) float32
        The rows, as stored, of every vector field a registered dot kernel reads
        (:func:`compute.signals.dot_fields`), side by side.
    raw_ok : (m, n_dot_fields) bool
        Whether each of those vectors is present.
    xyz : (m, 3) float64
        Unit position on the sphere (0 where not located).
    located : (m,) bool
    limit : (m,) float64
        Distance limit, inf = none.
    years, age_min, age_max : (m,) float64
        ⌊age⌋ (NaN stays NaN) and the sought range.
    has_interest : (m,) bool
    """

    unit: F32
    unit_ok: BoolArray
    raw: F32
    raw_ok: BoolArray
    xyz: npt.NDArray[np.float64]
    located: BoolArray
    limit: npt.NDArray[np.float64]
    years: npt.NDArray[np.float64]
    age_min: npt.NDArray[np.float64]
    age_max: npt.NDArray[np.float64]
    has_interest: BoolArray

    def take(self, rows: RowArray) -> UserFeatures:
        """The features of ``rows`` (a gather of every array)."""
        # np.take gathers whole rows of the 2-D arrays ~4x faster than fancy indexing.
        return UserFeatures(
            **{f.name: np.take(getattr(self, f.name), rows, axis=0) for f in fields(self)}
        )


def user_features(pop: Population) -> UserFeatures:
    """:class:`UserFeatures` of every row of ``pop``."""
    every = np.arange(pop.n_users, dtype=np.int64)
    units, oks = [], []
    for field, present in signals.cosine_fields():
        unit, ok = signals.unit_rows(
            np.asarray(getattr(pop, field), dtype=np.float32),
            signals.present_mask(pop, present, every),
        )
        units.append(unit)
        oks.append(ok)
    raws, raw_oks = [], []
    for field, present in signals.dot_fields():
        raws.append(np.asarray(getattr(pop, field), dtype=np.float32))
        raw_oks.append(signals.present_mask(pop, present, every))
    lat = np.radians(pop.lat)
    lon = np.radians(pop.lon)
    located = np.isfinite(lat) & np.isfinite(lon)
    xyz = np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    limit = pop.max_distance_km.astype(np.float64)
    return UserFeatures(
        unit=np.ascontiguousarray(np.hstack(units), dtype=np.float32)
        if units
        else np.zeros((pop.n_users, 0), np.float32),
        unit_ok=np.column_stack(oks) if oks else np.zeros((pop.n_users, 0), np.bool_),
        raw=np.ascontiguousarray(np.hstack(raws), dtype=np.float32)
        if raws
        else np.zeros((pop.n_users, 0), np.float32),
        raw_ok=np.column_stack(raw_oks) if raw_oks else np.zeros((pop.n_users, 0), np.bool_),
        xyz=np.ascontiguousarray(np.where(located[:, None], xyz, 0.0)),
        located=located,
        limit=np.where(np.isnan(limit), np.inf, limit),
        years=np.floor(pop.age.astype(np.float64)),
        age_min=pop.age_min.astype(np.float64),
        age_max=pop.age_max.astype(np.float64),
        has_interest=np.diff(pop.interest_indptr) > 0,
    )


def distance_matrix(q_side: UserFeatures, c_side: UserFeatures) -> npt.NDArray[np.float64]:
    """(q, c) float64 great-circle km from unit positions (garbage where not located).

    chord²/4 = (1 − ⟨x_a, x_b⟩)/2 = haversine's h, so this equals the haversine.
    """
    h = q_side.xyz @ c_side.xyz.T
    np.subtract(1.0, h, out=h)
    h *= 0.5
    np.clip(h, 0.0, 1.0, out=h)
    np.sqrt(h, out=h)
    np.arcsin(h, out=h)
    h *= 2.0 * geo.EARTH_RADIUS_KM
    return h


def _finite_weights(weights: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """``np.nan_to_num(weights, nan=0.0)``, skipped when every weight is finite (the norm)."""
    if np.isfinite(weights).all():
        return weights
    finite: npt.NDArray[np.floating] = np.nan_to_num(weights, nan=0.0)
    return finite


def _weigh(
    values: npt.NDArray[np.floating],
    row_ok: BoolArray,
    col_ok: BoolArray,
    weight: float,
    neutral: float,
) -> F32:
    """weight · values as float32, weight · neutral in rows/columns where the kernel is missing."""
    term = values.astype(np.float32, copy=False)
    term *= np.float32(weight)
    fill = np.float32(weight * neutral)
    term[~row_ok, :] = fill
    term[:, ~col_ok] = fill
    return term


class BlockTerms:
    """The weighted signal terms of one block: its candidates, prepared once.

    Parameters
    ----------
    pop : Population
    cands : (c,) int64
        The block's candidate rows.
    c_side : UserFeatures
        Their features.
    weights : (n_signals,) float64
        Normalized weights; a signal of weight 0 is skipped (it adds exactly 0).
    neutral : (n_signals,) float64
        Value of each signal when missing.
    params : SignalParams
    """

    def __init__(
        self,
        pop: Population,
        cands: RowArray,
        c_side: UserFeatures,
        weights: npt.NDArray[np.float64],
        neutral: npt.NDArray[np.float64],
        params: signals.SignalParams,
    ) -> None:
        self._pop = pop
        self._c = c_side
        self._weights = weights
        self._neutral = neutral
        self._params = params
        self._active = [(i, s) for i, s in enumerate(signals.SIGNALS) if weights[i] != 0.0]
        spans, offset = {}, 0
        for column, (field, present) in enumerate(signals.cosine_fields()):
            width = int(np.asarray(getattr(pop, field)).shape[1])
            spans[(field, present)] = (slice(offset, offset + width), column)
            offset += width
        self._spans = spans
        spans, offset = {}, 0
        for column, (field, present) in enumerate(signals.dot_fields()):
            width = int(np.asarray(getattr(pop, field)).shape[1])
            spans[(field, present)] = (slice(offset, offset + width), column)
            offset += width
        self._dot_spans = spans
        self._cands = cands
        self._n_distance = sum(isinstance(s.kernel, signals.Distance) for _, s in self._active)
        self._dense = (
            _dense_interests(pop, cands)
            if any(isinstance(s.kernel, signals.InterestOverlap) for _, s in self._active)
            else None
        )
        self.candidate_own = self.own_term(cands)

    @property
    def uses_distance(self) -> bool:
        return self._n_distance > 0

    def own_term(self, rows: RowArray) -> F32:
        """(m,) Σ w · value over the candidate-value signals of ``rows`` as candidates."""
        total = np.zeros(rows.size, dtype=np.float64)
        for i, s in self._active:
            if isinstance(s.kernel, signals.CandidateValue):
                values, ok = signals.candidate_values(s, self._pop, rows, self._params)
                total += self._weights[i] * np.where(ok, values, self._neutral[i])
        return total.astype(np.float32)

    def _cosine(self, s: signals.Signal, i: int, q_side: UserFeatures, *, reverse: bool) -> F32:
        kernel = s.kernel
        assert isinstance(kernel, signals.Cosine)
        left = self._spans[(kernel.left, kernel.left_present)]
        right = self._spans[(kernel.right, kernel.right_present)]
        if reverse:  # cell [a, b] of b → a: cos(left_b, right_a)
            left, right = right, left
        raw = q_side.unit[:, left[0]] @ self._c.unit[:, right[0]].T
        # Unit dots may exceed ±1 by float32 rounding; the pair path clips the cosine too.
        np.clip(raw, -1.0, 1.0, out=raw)
        values = s.formula(raw, self._params)
        return _weigh(
            values,
            q_side.unit_ok[:, left[1]],
            self._c.unit_ok[:, right[1]],
            self._weights[i],
            self._neutral[i],
        )

    def _dot(self, s: signals.Signal, i: int, q_side: UserFeatures, *, reverse: bool) -> F32:
        kernel = s.kernel
        assert isinstance(kernel, signals.Dot)
        left = self._dot_spans[(kernel.left, kernel.left_present)]
        right = self._dot_spans[(kernel.right, kernel.right_present)]
        if reverse:  # cell [a, b] of b → a: ⟨left_b, right_a⟩
            left, right = right, left
        raw = q_side.raw[:, left[0]] @ self._c.raw[:, right[0]].T
        finite = np.isfinite(raw)  # as the pair path: a non-finite dot is missing
        values = s.formula(raw, self._params)
        values[~finite] = np.nan
        values[~q_side.raw_ok[:, left[1]], :] = np.nan
        values[:, ~self._c.raw_ok[:, right[1]]] = np.nan
        term = np.where(np.isnan(values), np.float32(self._neutral[i]), values)
        term *= np.float32(self._weights[i])
        return term.astype(np.float32, copy=False)

    def _symmetric_term(
        self,
        s: signals.Signal,
        i: int,
        rows: RowArray,
        q_side: UserFeatures,
        distance: npt.NDArray[np.float64] | None,
    ) -> F32:
        kernel = s.kernel
        if isinstance(kernel, signals.Cosine):
            return self._cosine(s, i, q_side, reverse=False)
        if isinstance(kernel, signals.Dot):
            return self._dot(s, i, q_side, reverse=False)
        if isinstance(kernel, signals.InterestOverlap):
            assert self._dense is not None
            raw = _interest_overlap(self._pop, rows, self._dense, q_side.has_interest)
            return _weigh(
                s.formula(raw, self._params),
                q_side.has_interest,
                self._c.has_interest,
                self._weights[i],
                self._neutral[i],
            )
        assert isinstance(kernel, signals.Distance) and distance is not None
        km = distance if self._n_distance == 1 else distance.copy()
        return _weigh(
            s.formula(km, self._params),
            q_side.located,
            self._c.located,
            self._weights[i],
            self._neutral[i],
        )

    def directions(
        self,
        rows: RowArray,
        q_side: UserFeatures,
        distance: npt.NDArray[np.float64] | None,
        *,
        reciprocal: bool,
    ) -> tuple[F32, F32 | None]:
        """(q, c) a → b scores, and b → a when ``reciprocal``, each clipped to [0, 1].

        ``distance`` (:func:`distance_matrix`, required when a distance signal is weighted)
        may be overwritten.
        """
        shape = (rows.size, self._c.located.size)
        symmetric = np.zeros(shape, dtype=np.float32)
        for i, s in self._active:
            if s.symmetric:
                symmetric += self._symmetric_term(s, i, rows, q_side, distance)
        out: list[F32] = []
        for reverse in (False, True) if reciprocal else (False,):
            score: F32 | None = None
            for i, s in self._active:
                if s.symmetric:
                    continue
                if isinstance(s.kernel, signals.Cosine):
                    term = self._cosine(s, i, q_side, reverse=reverse)
                elif isinstance(s.kernel, signals.Dot):
                    term = self._dot(s, i, q_side, reverse=reverse)
                else:
                    continue
                if score is None:
                    score = term
                else:
                    score += term
            if score is None:
                score = symmetric.copy() if reverse or reciprocal else symmetric
            else:
                score += symmetric
            if reverse:
                score += self.own_term(rows)[:, None]
            else:
                score += self.candidate_own[None, :]
            np.clip(score, 0.0, 1.0, out=score)
            out.append(score)
        return out[0], out[1] if reciprocal else None


def _dense_interests(pop: Population, cands: RowArray) -> F32:
    """(max(codes, 1), c) float32: dense[code, column] = the candidate's interest weight."""
    n_codes = int(pop.interest_code_ids.size)
    dense = np.zeros((max(n_codes, 1), cands.size), dtype=np.float32)
    lengths = np.diff(pop.interest_indptr)[cands]
    starts = pop.interest_indptr[cands]
    offsets = np.cumsum(lengths) - lengths
    entries = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    # Flat (code · c + column) indices: a 1-D scatter is faster than a 2-D fancy one.
    flat = np.take(pop.interest_codes, entries).astype(np.int64) * cands.size
    flat += np.repeat(np.arange(cands.size), lengths)
    dense.reshape(-1)[flat] = _finite_weights(np.take(pop.interest_weights, entries))
    return dense


def _interest_overlap(
    pop: Population, query_rows: RowArray, dense: F32, query_has: BoolArray
) -> F32:
    """(q, c) Σ_i min(w_a,i, w_b,i) (the :class:`~compute.signals.InterestOverlap` kernel).

    ``dense`` is (codes, candidates). Rows without interests stay 0 (masked as missing by
    the caller). Rows are taken in runs of equal interest count L, and each run adds its L
    gathered rows one after the other: a row's sum has the same order in any batch, and
    the loop runs on whole (run, candidates) matrices (``reduceat`` over ragged segments
    was four times slower).
    """
    n_cands = dense.shape[1]
    overlap_all = np.zeros((query_rows.size, n_cands), dtype=np.float32)
    with_interests = np.flatnonzero(query_has)
    if with_interests.size == 0 or n_cands == 0:
        return overlap_all
    lengths = np.diff(pop.interest_indptr)[query_rows[with_interests]]
    starts = pop.interest_indptr[query_rows[with_interests]]
    for length in np.unique(lengths).tolist():
        run = np.flatnonzero(lengths == length)
        # (run, length) codes and weights, gathered once: per-j gathers and nan_to_num
        # calls cost more than the matrix work for short runs.
        entries = starts[run][:, None] + np.arange(length)
        codes = pop.interest_codes[entries]
        query_weights = _finite_weights(pop.interest_weights[entries]).astype(
            np.float32, copy=False
        )
        overlap = np.empty((run.size, n_cands), dtype=np.float32)
        gathered = np.empty_like(overlap)
        for j in range(length):
            target = overlap if j == 0 else gathered
            # Codes are in range (Population builds them as np.unique's inverse):
            # mode="clip" skips the buffered copy the bounds-checked mode makes of ``out``.
            np.take(dense, codes[:, j], axis=0, out=target, mode="clip")
            np.minimum(target, query_weights[:, j, None], out=target)
            if j:
                overlap += gathered
        overlap_all[with_interests[run]] = overlap
    return overlap_all
