"""The exposure spread's integer arithmetic, in plain Python: no numpy.

Ties in score are broken by a seeded hash of (user, candidate, version), never by candidate
id, so equal scores do not all go to the lowest ids (issue 11, item 7). P is a prime with
P mod 3 = 2, so x -> x³ mod P is a bijection and, for one user, distinct candidate ids below
P never share a key. Every product stays below 2**63 in int64 (numpy, PostgreSQL bigint and
SQLite integers alike). :func:`compute.sorting.spread_keys` computes the keys over arrays;
:mod:`jobs.storage.serving` orders the served list by the same arithmetic in SQL, and needs
only this module to do so (the API's read loads no numpy).
"""

from __future__ import annotations

import hashlib
from typing import Any

SPREAD_PRIME = 2147483579
SPREAD_CANDIDATE_FACTOR = 1103515245
SPREAD_USER_FACTOR = 1588635695


def spread_seed(version: str) -> int:
    """The spread's seed of an algorithm version: 31 bits of its SHA-256, in [0, P)."""
    digest = hashlib.sha256(version.encode()).digest()
    return int.from_bytes(digest[:8], "big") % SPREAD_PRIME


def spread_offset(user_ids: Any, seed: int) -> Any:
    """The user's part of a spread key: ``(u mod P · B mod P + seed) mod P``, ids ≥ 0.

    The same expression for an int (the API binds it as one parameter) and for an int64
    array (numpy keeps the array's dtype against Python ints; every product < 2**63).
    """
    p = SPREAD_PRIME
    return (user_ids % p * SPREAD_USER_FACTOR % p + seed % p) % p
