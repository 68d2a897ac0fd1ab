"""compute.sorting: the packed sort is the three-key lexsort, whatever the keys hold."""

from __future__ import annotations

import numpy as np
import pytest

from compute import scoring, sorting


def test_packed_order_equals_the_lexsort_on_ties_signed_zero_nan_and_wide_keys():
    rng = np.random.default_rng(1)
    for trial in range(300):
        m = int(rng.integers(0, 2000))
        groups = np.sort(rng.integers(0, int(rng.integers(1, 400)), m))
        if trial % 11 == 0:
            groups = rng.permutation(groups)
        if trial % 3 == 0:
            values = rng.choice(np.array([0, 0.25, 0.5, 1.0, -0.0], np.float32), m)
        else:
            values = rng.random(m, dtype=np.float32)
        if trial % 7 == 0 and m:
            values[0] = np.nan
        if trial % 13 == 0 and m:
            values[-1] = -0.5
        ties = rng.integers(0, int(10 ** rng.integers(1, 17)), m)  # some too wide to pack
        want = np.lexsort((ties, -values, groups)).tolist()
        assert sorting.group_value_order(groups, values, ties).tolist() == want, trial
        users = np.sort(groups)
        ids = ties - 5
        assert scoring._pair_order(users, values, ids).tolist() == (
            np.lexsort((ids, -values, users)).tolist()
        ), trial


def test_misaligned_keys_are_refused():
    with pytest.raises(ValueError, match="aligned 1-D"):
        sorting.group_value_order(np.arange(3), np.zeros(2, np.float32), np.arange(3))
