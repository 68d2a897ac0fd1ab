"""A user's candidate region holds every eligible candidate, and a region load equals a full one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compute import filters
from jobs.match import core as match
from jobs.storage import population as population_store
from jobs.tools import seed as seed_mod

PER_USER_FIELDS = (
    "gender",
    "seeking_mask",
    "age",
    "max_distance_km",
    "lat",
    "lon",
    "rating_quality",
    "has_rating_quality",
    "has_quiz",
    "has_interest",
    "has_preference",
)


@pytest.fixture
def seeded(db, seed_with_signals):
    config = seed_with_signals(db, 300, 11, seed_mod.DEFAULT_NOW)
    return db, match.settings_from_config(config)


def test_region_covers_every_eligible_candidate_and_loads_identically(seeded) -> None:
    db, settings = seeded
    now = seed_mod.DEFAULT_NOW
    with db.engine.connect() as conn:
        full = population_store.load(conn, now, settings.load).population
        targets = full.user_ids[::37]
        region = population_store.candidate_region(
            conn, targets, settings.load.default_max_distance_km
        )
        part = population_store.load(conn, now, settings.load, user_ids=region).population
    assert 0 < region.size < full.n_users
    rows_full = pd.Index(full.user_ids)
    rows_part = pd.Index(part.user_ids)
    for target in targets:
        a = rows_full.get_loc(target)
        everyone = np.arange(full.n_users)
        keep, _ = filters.mutual_filter(full, np.full(full.n_users, a), everyone)
        eligible = full.user_ids[keep]
        assert np.isin(eligible, region).all(), f"user {target}: eligible candidate outside"
        # the same rows, field by field, for the target and its eligible candidates
        ids = np.concatenate([[target], eligible])
        fi, pi = rows_full.get_indexer(ids), rows_part.get_indexer(ids)
        assert (pi >= 0).all()
        for name in PER_USER_FIELDS:
            np.testing.assert_array_equal(getattr(full, name)[fi], getattr(part, name)[pi], name)
        np.testing.assert_array_equal(full.quiz_vectors[fi], part.quiz_vectors[pi])
        np.testing.assert_array_equal(full.rating_dims[fi], part.rating_dims[pi])
        # exclusions of the target survive the region load
        excl_full = set(
            full.user_ids[full.excluded_rows[full.excluded_indptr[a] : full.excluded_indptr[a + 1]]]
        ) & set(region.tolist())
        b = rows_part.get_loc(target)
        excl_part = set(
            part.user_ids[part.excluded_rows[part.excluded_indptr[b] : part.excluded_indptr[b + 1]]]
        )
        assert excl_full == excl_part
