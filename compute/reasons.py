"""Up to three human-readable reasons per scored pair, and their bulk JSON encoding.

A signal qualifies as a reason when it was present (not replaced by the neutral
value) and its subscore reaches ``ReasonParams`` threshold for it; shared interests
also need at least one shared interest with a catalogue name. Qualifying signals
are ordered by contribution ``w_i · x_i`` (normalized weight × subscore),
descending, ties by signal order, and the first ``max_reasons`` are kept.

Each reason is ``{"code": ..., "params": {...}, "text": ...}``:

code, text and threshold come from each signal's entry in :data:`compute.signals.SIGNALS`;
a signal with a static ``reason_text`` has params ``{}``. Two reasons are worded from the
pair's data here:

================  ==================================  =====================================
signal            code / params                       text
================  ==================================  =====================================
interest          shared_interests, {"interests": […]}  You both love hiking and jazz
proximity         nearby, {"km": b}                   Less than 1 km away / About b km away
================  ==================================  =====================================

Distances are coarse: < 1 km → "Less than 1 km away" (``km`` = 1); < 50 km → nearest
multiple of 5 (at least 5); otherwise nearest multiple of 10.

:func:`encode_reasons_json` builds the JSON column without a ``json.dumps`` per row:
each distinct reason fragment (a static code, a distance bucket, a set of shared
interests) is encoded once, then each distinct combination of up to three fragments
is joined once and broadcast to its rows.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from compute import signals
from compute.population import Population
from compute.scoring import ScoredPairs

REASON_CODES: dict[str, str] = {s.name: s.reason_code for s in signals.SIGNALS}
STATIC_TEXTS: dict[str, str] = {
    s.name: s.reason_text for s in signals.SIGNALS if s.reason_text is not None
}
_INTEREST = signals.SIGNAL_NAMES.index("interest")
_PROXIMITY = signals.SIGNAL_NAMES.index("proximity")
# Largest packed key of a shared-interest set (int64).
_PACKED_SET_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class ReasonParams:
    """Minimum subscore for a signal to be offered as a reason (filled from YAML).

    Attributes
    ----------
    max_reasons : int in [0, 3]
    minimums : mapping of signal name → float, optional
        Thresholds on the subscore; a signal not named keeps its registered
        ``Signal.reason_min`` (see :mod:`compute.signals` for scales; with the default
        25 km proximity scale, 0.3 ≈ within 30 km, and with a 30-day newness half-life,
        0.5 ≈ account younger than 30 days).
    """

    max_reasons: int = 3
    minimums: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.max_reasons, int) and 0 <= self.max_reasons <= 3):
            raise ValueError(f"max_reasons must be an int in [0, 3]; got {self.max_reasons!r}")
        unknown = sorted(set(self.minimums) - set(signals.SIGNAL_NAMES))
        if unknown:
            raise ValueError(f"minimums must be among {signals.SIGNAL_NAMES}; got {unknown}")

    def thresholds(self) -> npt.NDArray[np.float64]:
        """(n_signals,) float64 thresholds in :data:`compute.signals.SIGNAL_NAMES` order."""
        return np.array([self.minimums.get(s.name, s.reason_min) for s in signals.SIGNALS])


def _catalogue_positions(
    pop: Population, interest_ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """(known mask, position in the catalogue arrays) for interest ids of any shape."""
    cat_ids = pop.catalogue_interest_ids
    if cat_ids.size == 0:
        return np.zeros(interest_ids.shape, bool), np.zeros(interest_ids.shape, np.int64)
    order = np.argsort(cat_ids, kind="stable")
    sorted_ids = cat_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, interest_ids), sorted_ids.size - 1)
    known = (interest_ids >= 0) & (sorted_ids[pos] == interest_ids)
    return known, order[pos]


def select_reasons(
    pop: Population, scored: ScoredPairs, params: ReasonParams | None = None
) -> npt.NDArray[np.int8]:
    """Choose the reasons of every pair.

    Parameters
    ----------
    pop : Population
        For the interest catalogue.
    scored : ScoredPairs
    params : ReasonParams, optional

    Returns
    -------
    (m, 3) int8
        Signal index (into :data:`compute.signals.SIGNAL_NAMES`) per reason slot, by
        decreasing contribution ``weights[i] · subscores[:, i]``; -1 = no reason.
    """
    params = params or ReasonParams()
    m = len(scored)
    subscores = scored.subscores.astype(np.float64)
    present = (scored.missing[:, None] >> np.arange(len(signals.SIGNAL_NAMES))) & 1 == 0
    qualifies = present & (subscores >= params.thresholds())
    named, _ = _catalogue_positions(pop, scored.shared_interest_ids)
    qualifies[:, _INTEREST] &= named.any(axis=1)
    qualifies[:, _PROXIMITY] &= scored.distance_km >= 0
    contribution = np.where(qualifies, scored.weights * subscores, -np.inf)
    # Stable sort on the negated contribution keeps signal order for ties.
    order = np.argsort(-contribution, axis=1, kind="stable")[:, :3]
    chosen = np.take_along_axis(contribution, order, axis=1)
    slots = np.where(np.isfinite(chosen), order, -1).astype(np.int8)
    slots[:, params.max_reasons :] = -1
    return slots.reshape(m, 3)


def distance_bucket_km(distance_km: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
    """Coarse distance: < 1 → 1; < 50 → max(5, round to 5); else round to 10. (p,) int64."""
    d = np.where(np.isfinite(distance_km), distance_km, 0.0).astype(np.float64)
    five = np.maximum(5, 5 * np.round(d / 5.0))
    ten = 10 * np.round(d / 10.0)
    return np.where(d < 1.0, 1, np.where(d < 50.0, five, ten)).astype(np.int64)


def _interest_text(names: list[str]) -> str:
    if len(names) == 1:
        return f"You both love {names[0]}"
    return "You both love " + ", ".join(names[:-1]) + " and " + names[-1]


@functools.lru_cache(maxsize=1 << 17)
def _interest_fragment(names: tuple[str, ...]) -> str:
    """The shared-interests fragment of ``names`` (cached: sets recur across shards)."""
    return _fragment("interest", {"interests": list(names)}, _interest_text(list(names)))


def _fragment(code_signal: str, params: dict[str, object], text: str) -> str:
    return json.dumps(
        {"code": REASON_CODES[code_signal], "params": params, "text": text}, ensure_ascii=False
    )


def encode_reasons_json(
    pop: Population, scored: ScoredPairs, slots: npt.NDArray[np.int8]
) -> npt.NDArray[np.object_]:
    """JSON text of each pair's reasons, e.g. ``[{"code": "nearby", ...}, ...]``.

    Parameters
    ----------
    pop : Population
    scored : ScoredPairs
    slots : (m, 3) int8
        From :func:`select_reasons`.

    Returns
    -------
    (m,) object array of str
        ``"[]"`` for pairs without reasons.
    """
    m = len(scored)
    if slots.shape != (m, 3):
        raise ValueError(f"slots must be ({m}, 3); got {slots.shape}")
    fragments: list[str] = []
    frag_ids = np.full((m, 3), -1, dtype=np.int64)

    for name, text in STATIC_TEXTS.items():
        frag_ids[slots == signals.SIGNAL_NAMES.index(name)] = len(fragments)
        fragments.append(_fragment(name, {}, text))

    near = slots == _PROXIMITY
    if near.any():
        pair_idx = np.nonzero(near)[0]
        buckets = distance_bucket_km(scored.distance_km[pair_idx])
        unique_buckets, inverse = np.unique(buckets, return_inverse=True)
        base = len(fragments)
        for km in unique_buckets.tolist():
            text = "Less than 1 km away" if km <= 1 else f"About {km} km away"
            fragments.append(_fragment("proximity", {"km": km}, text))
        frag_ids[near] = base + inverse.reshape(-1)

    shared = slots == _INTEREST
    if shared.any():
        pair_idx = np.nonzero(shared)[0]
        known, positions = _catalogue_positions(pop, scored.shared_interest_ids[pair_idx])
        radix = pop.catalogue_interest_ids.size + 1
        digits = np.where(known, positions + 1, 0)
        if radix ** digits.shape[1] <= _PACKED_SET_LIMIT:
            # One integer per ordered set of catalogue positions: a 1-D unique (fast).
            set_keys = np.zeros(pair_idx.size, dtype=np.int64)
            for column in range(digits.shape[1]):
                set_keys = set_keys * radix + digits[:, column]
            _, first_pair, inverse = np.unique(set_keys, return_index=True, return_inverse=True)
        else:
            # A catalogue too large for the sets to pack into an int64: row-wise unique.
            _, first_pair, inverse = np.unique(
                digits, axis=0, return_index=True, return_inverse=True
            )
        names_by_position = np.array(pop.catalogue_interest_names.tolist(), dtype=object)

        def interest_fragments(columns: list[npt.NDArray[np.int64]]) -> list[str]:
            names = zip(*(names_by_position[c] for c in columns), strict=True)
            return list(map(_interest_fragment, names))

        base = len(fragments)
        fragments.extend(
            _by_pattern(digits[first_pair] - 1, interest_fragments, lambda: _interest_fragment(()))
        )
        frag_ids[shared] = base + inverse.reshape(-1)

    span = len(fragments) + 1
    if span**3 < 2**62:
        keys = ((frag_ids[:, 0] + 1) * span + (frag_ids[:, 1] + 1)) * span + (frag_ids[:, 2] + 1)
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        combos = np.stack(
            [
                unique_keys // (span * span) - 1,
                (unique_keys // span) % span - 1,
                unique_keys % span - 1,
            ],
            axis=1,
        )
    else:
        combos, inverse = np.unique(frag_ids, axis=0, return_inverse=True)
    by_id = np.array(fragments, dtype=object)

    def join(columns: list[npt.NDArray[np.object_]]) -> npt.NDArray[np.object_]:
        # Object-array additions concatenate in C, without a Python join per combination.
        text: npt.NDArray[np.object_] = "[" + columns[0]
        for column in columns[1:]:
            text = text + ", " + column
        text = text + "]"
        return text

    texts = np.array(
        _by_pattern(combos, lambda columns: join([by_id[c] for c in columns]), lambda: "[]"),
        dtype=object,
    )
    return texts[inverse.reshape(-1)] if m else np.empty(0, dtype=object)


def _by_pattern(
    ids: npt.NDArray[np.int64],
    build: Callable[[list[npt.NDArray[np.int64]]], Sequence[str] | npt.NDArray[np.object_]],
    empty: Callable[[], str],
) -> list[str]:
    """One string per row of ``ids`` (-1 = skip), built per pattern of skipped columns.

    ``build`` gets the row's non-skipped columns, in order, for every row sharing one
    pattern at once; rows skipping every column get ``empty()``.
    """
    out = np.empty(ids.shape[0], dtype=object)
    present = ids >= 0
    patterns = present @ (1 << np.arange(ids.shape[1]))
    for pattern in np.unique(patterns).tolist():
        rows = np.flatnonzero(patterns == pattern)
        if pattern == 0:
            out[rows] = empty()
            continue
        kept = [ids[rows, k] for k in range(ids.shape[1]) if pattern >> k & 1]
        out[rows] = build(kept)
    return out.tolist()
