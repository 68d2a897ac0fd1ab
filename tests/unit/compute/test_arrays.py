"""compute.arrays.unique_codes: the same answer as np.unique(return_inverse) on either path."""

from __future__ import annotations

import numpy as np
import pytest

from compute.arrays import unique_codes


@pytest.mark.parametrize(
    "ids",
    [
        np.array([7, 3, 3, 9, 7, 100], dtype=np.int64),  # a narrow range: the lookup table
        np.array([5, -2, 5, 10**12, -2], dtype=np.int64),  # a wide one: the sort
        np.random.default_rng(0).integers(0, 300, size=2_000),
        np.array([4], dtype=np.int32),
    ],
)
def test_unique_codes_equals_numpy_unique(ids) -> None:
    distinct, codes = unique_codes(ids)
    want_distinct, want_codes = np.unique(ids, return_inverse=True)
    assert distinct.dtype == np.int64 and codes.dtype == np.int64
    assert np.array_equal(distinct, want_distinct)
    assert np.array_equal(codes, want_codes.reshape(-1))
    assert np.array_equal(distinct[codes], ids)


def test_unique_codes_of_nothing_and_of_the_wrong_kind() -> None:
    distinct, codes = unique_codes(np.empty(0, dtype=np.int64))
    assert distinct.size == 0 and codes.size == 0
    with pytest.raises(TypeError, match="integer"):
        unique_codes(np.array([1.5, 2.0]))
