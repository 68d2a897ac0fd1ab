"""The one ordering the ranking code sorts by: group ascending, score descending, tie ascending.

``np.lexsort((ties, -values, groups))`` is three stable sorts. When the three keys fit in
one int64 — groups and ties non-negative, values non-negative float32 (whose bit patterns
order like their values) — a single stable sort of packed keys gives the same permutation
at a third of the cost; it sorts every kept pair of a nightly several times.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_VALUE_BITS = 31


def group_value_order(
    groups: npt.NDArray[np.integer],
    values: npt.NDArray[np.floating],
    ties: npt.NDArray[np.integer],
) -> npt.NDArray[np.intp]:
    """Permutation equal to ``np.lexsort((ties, -values, groups))``.

    Parameters
    ----------
    groups : (m,) int
    values : (m,) float
    ties : (m,) int

    Returns
    -------
    (m,) intp
        Sorted by ``groups`` ascending, then ``values`` descending, then ``ties``
        ascending; equal keys keep their input order. Packed into one int64 key when
        ``values`` are float32 and neither negative nor NaN (``-0.0`` ties with ``0.0``,
        as in the lexsort), and ``groups`` and ``ties`` are non-negative and fit beside
        them; otherwise the lexsort itself.
    """
    if not groups.shape == values.shape == ties.shape or groups.ndim != 1:
        raise ValueError(
            f"groups, values and ties must be aligned 1-D arrays; got {groups.shape}, "
            f"{values.shape}, {ties.shape}"
        )
    if groups.size < 2 or values.dtype != np.float32:
        return np.lexsort((ties, -values, groups))
    group_bits = max(int(groups.max()), 1).bit_length()
    tie_bits = max(int(ties.max()), 1).bit_length()
    fits = group_bits + _VALUE_BITS + tie_bits <= 63
    if not fits or groups.min() < 0 or ties.min() < 0 or not bool((values >= 0).all()):
        return np.lexsort((ties, -values, groups))
    # + 0 turns -0.0 into 0.0; the largest finite or infinite bit pattern is < 2**31.
    descending = np.int64(0x7FFFFFFF) - (values + np.float32(0.0)).view(np.int32)
    keys = groups.astype(np.int64) << (_VALUE_BITS + tie_bits)
    keys |= descending << tie_bits
    keys |= ties.astype(np.int64)
    return np.argsort(keys, kind="stable")
