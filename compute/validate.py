"""Shared argument checks and row-validation helpers for the signal modules.

Two kinds of problem are kept apart here, as the style guide requires:

* a *caller's mistake* (wrong type, shape or dtype, mismatched lengths) raises
  ``TypeError``/``ValueError`` naming the argument, the expectation and the
  actual value;
* a *bad row* is data: validators build a keep-mask plus a count per reason.
  Each rejected row is counted once, under the first reason that applies in the
  order the caller lists them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compute.arrays import BoolArray, FloatArray, IntArray


def _as_ndarray(name: str, values: object) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        raise TypeError(f"{name} must be a numpy array; got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {values.shape}")
    return values


def as_ids(name: str, values: object) -> IntArray:
    """Return ``values`` as a 1-D int64 array; raise if it is not 1-D integers."""
    array = _as_ndarray(name, values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype; got {array.dtype}")
    return array.astype(np.int64, copy=False)


def as_floats(name: str, values: object) -> FloatArray:
    """Return ``values`` as a 1-D float64 array; integers are accepted and converted."""
    array = _as_ndarray(name, values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must have a numeric dtype; got {array.dtype}")
    return array.astype(np.float64, copy=False)


def as_bools(name: str, values: object) -> BoolArray:
    """Return ``values`` as a 1-D bool array; raise on any other dtype."""
    array = _as_ndarray(name, values)
    if array.dtype.kind != "b":
        raise TypeError(f"{name} must have a bool dtype; got {array.dtype}")
    return array


def check_same_length(**arrays: np.ndarray) -> int:
    """Return the common length of ``arrays``; raise ``ValueError`` naming them if they differ."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length; got {lengths}")
    return next(iter(lengths.values()), 0)


def check_unique(name: str, ids: IntArray) -> None:
    """Raise ``ValueError`` if ``ids`` holds a repeated value (an id list, not rows)."""
    if len(ids) > 1:
        sorted_ids = np.sort(ids)
        repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if len(repeated):
            raise ValueError(
                f"{name} must be unique; got {len(repeated)} repeats, e.g. {int(repeated[0])}"
            )


def lookup(sorted_ids: IntArray, query_ids: IntArray) -> tuple[IntArray, BoolArray]:
    """Positions of ``query_ids`` in the sorted, unique ``sorted_ids``.

    Returns
    -------
    positions : (n,) int64
        Index into ``sorted_ids``; meaningless (but in range) where ``found`` is False.
    found : (n,) bool
        Whether each query id occurs in ``sorted_ids``.
    """
    if len(sorted_ids) == 0:
        return np.zeros(len(query_ids), dtype=np.int64), np.zeros(len(query_ids), dtype=bool)
    positions = np.searchsorted(sorted_ids, query_ids).astype(np.int64)
    np.minimum(positions, len(sorted_ids) - 1, out=positions)
    found = sorted_ids[positions] == query_ids
    return positions, found


def duplicate_mask(keys: IntArray, candidates: BoolArray, *, keep: str) -> BoolArray:
    """Rows among ``candidates`` whose key repeats an earlier/later candidate's key.

    Parameters
    ----------
    keys : (n,) int64
        One key per row (e.g. ``user_pos * n_questions + question_pos``).
    candidates : (n,) bool
        Rows that passed every other check; only these compete for a key.
    keep : {"first", "last"}
        Which occurrence (in input order) survives.

    Returns
    -------
    (n,) bool
        True for the candidate rows to drop as duplicates.
    """
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last'; got {keep!r}")
    rows = np.flatnonzero(candidates)
    if keep == "last":
        rows = rows[::-1]
    _, first_index = np.unique(keys[rows], return_index=True)
    survivors = np.zeros(len(keys), dtype=bool)
    survivors[rows[first_index]] = True
    return candidates & ~survivors


def classify_rows(n_rows: int, reasons: Sequence[tuple[str, BoolArray]]) -> dict[str, int]:
    """Count rows per reason, each bad row under the first reason it fails.

    ``reasons`` is an ordered list of ``(name, bad_mask)``; every name appears in
    the result, with 0 when nothing failed it, so run metadata has stable keys.
    """
    counts: dict[str, int] = {}
    already_bad = np.zeros(n_rows, dtype=bool)
    for name, bad in reasons:
        fresh = bad & ~already_bad
        counts[name] = counts.get(name, 0) + int(fresh.sum())
        already_bad |= bad
    return counts


def keep_mask(n_rows: int, reasons: Sequence[tuple[str, BoolArray]]) -> BoolArray:
    """Rows that fail none of ``reasons``."""
    keep = np.ones(n_rows, dtype=bool)
    for _, bad in reasons:
        keep &= ~bad
    return keep


def l2_normalize_rows(vectors: FloatArray) -> tuple[FloatArray, BoolArray]:
    """L2-normalize each row of ``vectors`` without overflow, underflow or NaN.

    Each row is first divided by its largest absolute value, so the norm that
    follows lies in ``[1, sqrt(dim)]`` whatever the input magnitude.

    Parameters
    ----------
    vectors : (n, dim) float64, finite

    Returns
    -------
    normalized : (n, dim) float64
        Unit rows; all-zero rows stay all-zero.
    nonzero : (n,) bool
        False for rows that were all zero (they have no direction).
    """
    if vectors.shape[1] == 0:
        return vectors.copy(), np.zeros(len(vectors), dtype=bool)
    max_abs = np.max(np.abs(vectors), axis=1)
    nonzero = max_abs > 0
    scaled = vectors / np.where(nonzero, max_abs, 1.0)[:, None]
    norms = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    normalized = scaled / np.where(nonzero, norms, 1.0)[:, None]
    return normalized, nonzero
