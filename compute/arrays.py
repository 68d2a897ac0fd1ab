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
