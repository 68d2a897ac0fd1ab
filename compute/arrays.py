"""The array types compute/ names in its signatures, and the input check its functions share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def as_1d(name: str, value: npt.ArrayLike, dtype: type, size: int | None = None) -> np.ndarray:
    """``value`` as a 1-D array of ``dtype`` (of length ``size`` if given), or a clear error."""
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


def unique_codes(ids: IntArray) -> tuple[IntArray, IntArray]:
    """``np.unique(ids, return_inverse=True)`` for integer ids, as ``(distinct, codes)``.

    Ids spanning a range no wider than a few times their count (catalogue ids, user rows)
    are coded through a lookup table, O(n + range), instead of a sort, O(n log n): a
    population rebuilt once per event batch codes every interest it holds. Same result
    either way: ``distinct`` sorted, ``distinct[codes] == ids``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise TypeError(f"ids must be a 1-D integer array; got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    low, high = int(ids.min()), int(ids.max())
    if high - low > 4 * ids.size + 1024:
        distinct, codes = np.unique(ids, return_inverse=True)
        return distinct.astype(np.int64), codes.reshape(-1).astype(np.int64)
    present = np.zeros(high - low + 1, dtype=np.bool_)
    present[ids - low] = True
    table = np.cumsum(present, dtype=np.int64) - 1
    return np.flatnonzero(present).astype(np.int64) + low, table[ids - low]
