"""Interests: the normalized per-user index, dense vectors, and pairwise overlap.

Normalization (``normalize_interests``), per user ``u`` over its valid rows::

    raw_ui = raw weight, or 1.0 when the raw weight is NaN ("no explicit weight")
    w_ui   = raw_ui / sum_j raw_uj                 so sum_i w_ui = 1

Bad rows are skipped and counted, each under the first reason that applies, in
this order: ``unknown_interest`` (not in the catalogue), ``bad_weight``
(negative or ±inf), ``zero_weight`` (exactly 0: it carries no signal and a user
with only such rows would have no weights to normalize), ``duplicate_interest``
(a second valid row for the same (user, interest): the **last** row in input
order is kept).

IDF (``interest_idf``) over the users of an index (``N`` = users with at least
one interest, ``df_i`` = those users holding interest ``i``)::

    idf_i = log((1 + N) / (1 + df_i)) + 1

It depends on the population, so the jobs layer computes it once over everyone
and passes it to single-user runs; given the same ``idf`` a single-user vector
equals that user's batch vector.

Vectors (``interest_vectors``)::

    x_u[col(i)] += sign(i) * w_ui * idf_i        (idf_i = 1 when idf is off)
    v_u = x_u / ||x_u||_2

Placement ``(col, sign)``: when the catalogue has at most ``dim`` interests,
interest ``i`` goes to its position in the id-sorted catalogue with sign +1 and
the remaining columns stay 0 (exact, but a catalogue change that shifts
positions needs every vector recomputed). When the catalogue is larger, each
interest id is hashed (splitmix64, seeded by ``projection_seed``) to a column
in ``[0, dim)`` and a sign: a signed feature-hashing projection that keeps
inner products unbiased, is stable across runs and machines, and does not
depend on catalogue order or on other interests. Users with no valid interest
get no vector (``no_interests``); a user whose hashed components cancel to
exactly zero gets none either (``zero_vector``).

Overlap (``interest_overlap``) for a pair ``(a, b)``::

    overlap_ab = sum over shared interests i of min(w_ai, w_bi)   in [0, 1]

It is 1 only for identical weight distributions, symmetric, and undefined when
either side has no interests (``has_both`` is False, overlap reported as 0).

Why one file of ~650 lines: normalization, the dense vectors and the pairwise overlap share
one index layout (CSR rows of normalized weights) and its invariants; each part is short.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from compute import validate

INTEREST_ROW_REASONS = ("unknown_interest", "bad_weight", "zero_weight", "duplicate_interest")
INTEREST_USER_REASONS = ("no_interests", "zero_vector")

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class InterestParams:
    """Tunable interest-vector parameters (filled from YAML by the jobs layer).

    Attributes
    ----------
    dim : int
        Vector dimension, >= 1.
    projection_seed : int
        Seed of the hashing projection, in ``[0, 2**64)``.
    use_idf : bool
        Weight each interest by its IDF.
    """

    dim: int
    projection_seed: int
    use_idf: bool

    def __post_init__(self) -> None:
        for name in ("dim", "projection_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int; got {value!r}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1; got {self.dim}")
        if not 0 <= self.projection_seed <= _MASK64:
            raise ValueError(f"projection_seed must be in [0, 2**64); got {self.projection_seed}")
        if not isinstance(self.use_idf, bool):
            raise TypeError(f"use_idf must be a bool; got {self.use_idf!r}")


@dataclass(frozen=True, eq=False)
class InterestCatalogue:
    """The interest catalogue, stored sorted by interest id (input order does not matter).

    Attributes
    ----------
    interest_ids : (k,) int64, unique
    subject_ids : (k,) int64
    """

    interest_ids: npt.NDArray[np.int64]
    subject_ids: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        interest_ids = validate.as_ids("interest_ids", self.interest_ids)
        subject_ids = validate.as_ids("subject_ids", self.subject_ids)
        validate.check_same_length(interest_ids=interest_ids, subject_ids=subject_ids)
        validate.check_unique("interest_ids", interest_ids)
        order = np.argsort(interest_ids, kind="stable")
        object.__setattr__(self, "interest_ids", interest_ids[order])
        object.__setattr__(self, "subject_ids", subject_ids[order])


@dataclass(frozen=True, eq=False)
class NormalizedInterests:
    """Valid interest rows with per-user normalized weights (the ``user_interest_index`` rows).

    Attributes
    ----------
    user_ids, subject_ids, interest_ids : (n,) int64
        Sorted by user, then interest; one row per (user, interest).
    weights : (n,) float64
        In ``[0, 1]``, summing to 1 per user.
    skipped : dict[str, int]
        Row counts for every reason in ``INTEREST_ROW_REASONS``.
    """

    user_ids: npt.NDArray[np.int64]
    subject_ids: npt.NDArray[np.int64]
    interest_ids: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    skipped: dict[str, int]


@dataclass(frozen=True, eq=False)
class InterestIndex:
    """CSR view of normalized interests: row ``r`` is user ``user_ids[r]``.

    Build it with :meth:`from_rows`. Entries of row ``r`` are
    ``indptr[r]:indptr[r + 1]``, sorted by interest id, one per interest.

    Attributes
    ----------
    user_ids : (u,) int64, strictly increasing
    indptr : (u + 1,) int64
    interest_ids, subject_ids : (nnz,) int64
    weights : (nnz,) float64, finite, >= 0
    """

    user_ids: npt.NDArray[np.int64]
    indptr: npt.NDArray[np.int64]
    interest_ids: npt.NDArray[np.int64]
    subject_ids: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    # Sorted merge key ``row * n_distinct_interests + interest_rank`` for overlap lookups.
    _keys: npt.NDArray[np.int64] = field(init=False, repr=False)
    _n_ranks: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        user_ids = validate.as_ids("user_ids", self.user_ids)
        indptr = validate.as_ids("indptr", self.indptr)
        interest_ids = validate.as_ids("interest_ids", self.interest_ids)
        subject_ids = validate.as_ids("subject_ids", self.subject_ids)
        weights = validate.as_floats("weights", self.weights)
        nnz = validate.check_same_length(
            interest_ids=interest_ids, subject_ids=subject_ids, weights=weights
        )
        if len(indptr) != len(user_ids) + 1 or indptr[0] != 0 or indptr[-1] != nnz:
            raise ValueError(
                f"indptr must have length {len(user_ids) + 1}, start at 0 and end at {nnz}; "
                f"got length {len(indptr)}, ends {indptr[0] if len(indptr) else None}.."
                f"{indptr[-1] if len(indptr) else None}"
            )
        if np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must be non-decreasing")
        if np.any(np.diff(user_ids) <= 0):
            raise ValueError("user_ids must be strictly increasing")
        if not np.all(np.isfinite(weights) & (weights >= 0)):
            raise ValueError("weights must be finite and >= 0")
        distinct, ranks = np.unique(interest_ids, return_inverse=True)
        n_ranks = max(len(distinct), 1)
        entry_rows = np.repeat(np.arange(len(user_ids), dtype=np.int64), np.diff(indptr))
        keys = entry_rows * n_ranks + ranks.astype(np.int64)
        if np.any(np.diff(keys) <= 0):
            raise ValueError("interest_ids must be strictly increasing within each user's row")
        for name, value in (
            ("user_ids", user_ids),
            ("indptr", indptr),
            ("interest_ids", interest_ids),
            ("subject_ids", subject_ids),
            ("weights", weights),
            ("_keys", keys),
            ("_n_ranks", n_ranks),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_rows(
        cls,
        user_ids: npt.NDArray[np.int64],
        interest_ids: npt.NDArray[np.int64],
        subject_ids: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
    ) -> InterestIndex:
        """Build the index from normalized rows in any order.

        Parameters
        ----------
        user_ids, interest_ids, subject_ids : (n,) int64
        weights : (n,) float64, finite, >= 0 (normally summing to 1 per user)

        Raises
        ------
        ValueError
            On a repeated (user, interest) or a negative/non-finite weight:
            these rows are the output of :func:`normalize_interests`, so such
            a row is a broken invariant, not user data.
        """
        user_ids = validate.as_ids("user_ids", user_ids)
        interest_ids = validate.as_ids("interest_ids", interest_ids)
        subject_ids = validate.as_ids("subject_ids", subject_ids)
        weights = validate.as_floats("weights", weights)
        validate.check_same_length(
            user_ids=user_ids, interest_ids=interest_ids, subject_ids=subject_ids, weights=weights
        )
        order = np.lexsort((interest_ids, user_ids))
        sorted_users = user_ids[order]
        sorted_interests = interest_ids[order]
        repeated = (sorted_users[1:] == sorted_users[:-1]) & (
            sorted_interests[1:] == sorted_interests[:-1]
        )
        if repeated.any():
            i = int(np.flatnonzero(repeated)[0])
            raise ValueError(
                "(user_id, interest_id) must be unique; got a repeat of "
                f"({sorted_users[i]}, {sorted_interests[i]})"
            )
        distinct_users, counts = np.unique(sorted_users, return_counts=True)
        indptr = np.zeros(len(distinct_users) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(
            user_ids=distinct_users,
            indptr=indptr,
            interest_ids=sorted_interests,
            subject_ids=subject_ids[order],
            weights=weights[order],
        )

    def rows_of(self, user_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """(n,) int64 row of each user in the index, or -1 for users without interests."""
        user_ids = validate.as_ids("user_ids", user_ids)
        rows, found = validate.lookup(self.user_ids, user_ids)
        return np.where(found, rows, -1)


@dataclass(frozen=True, eq=False)
class InterestVectors:
    """Result of :func:`interest_vectors`.

    Attributes
    ----------
    user_ids : (m,) int64
        Users that got a vector, in the order requested.
    vectors : (m, dim) float32, C-contiguous, unit L2 norm, finite
    n_interests : (m,) int32
        Catalogue interests behind each vector.
    skipped : dict[str, int]
        ``unknown_interest``: index entries whose interest is not in the
        catalogue (entries); ``no_interests`` and ``zero_vector``: requested users.
    """

    user_ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    n_interests: npt.NDArray[np.int32]
    skipped: dict[str, int]


def normalize_interests(
    user_ids: npt.NDArray[np.int64],
    interest_ids: npt.NDArray[np.int64],
    raw_weights: npt.NDArray[np.float64],
    catalogue: InterestCatalogue,
) -> NormalizedInterests:
    """Validate raw user-interest rows and normalize weights to sum to 1 per user.

    Parameters
    ----------
    user_ids, interest_ids : (n,) int64
    raw_weights : (n,) float64
        NaN means "no explicit weight" and counts as 1.0.
    catalogue : InterestCatalogue

    Returns
    -------
    NormalizedInterests
        Rows sorted by (user, interest); formula and skip reasons in the module docstring.
    """
    if not isinstance(catalogue, InterestCatalogue):
        raise TypeError(f"catalogue must be an InterestCatalogue; got {type(catalogue).__name__}")
    user_ids = validate.as_ids("user_ids", user_ids)
    interest_ids = validate.as_ids("interest_ids", interest_ids)
    raw_weights = validate.as_floats("raw_weights", raw_weights)
    n_rows = validate.check_same_length(
        user_ids=user_ids, interest_ids=interest_ids, raw_weights=raw_weights
    )
    weights = np.where(np.isnan(raw_weights), 1.0, raw_weights)
    interest_pos, found = validate.lookup(catalogue.interest_ids, interest_ids)
    reasons = [
        ("unknown_interest", ~found),
        ("bad_weight", np.isinf(weights) | (weights < 0)),
        ("zero_weight", weights == 0),
    ]
    candidates = validate.keep_mask(n_rows, reasons)
    _, user_codes = np.unique(user_ids, return_inverse=True)
    keys = user_codes.astype(np.int64) * max(len(catalogue.interest_ids), 1) + interest_pos
    duplicate = validate.duplicate_mask(keys, candidates, keep="last")
    reasons.append(("duplicate_interest", duplicate))
    keep = candidates & ~duplicate

    kept_users = user_ids[keep]
    kept_pos = interest_pos[keep]
    kept_weights = weights[keep]
    order = np.lexsort((kept_pos, kept_users))
    kept_users, kept_pos, kept_weights = kept_users[order], kept_pos[order], kept_weights[order]
    normalized = np.empty(0, dtype=np.float64)
    if len(kept_users):
        starts = np.flatnonzero(np.r_[True, kept_users[1:] != kept_users[:-1]])
        counts = np.diff(np.r_[starts, len(kept_users)])
        # Divide by the user's largest weight first, so the sum cannot overflow.
        largest = np.repeat(np.maximum.reduceat(kept_weights, starts), counts)
        relative = kept_weights / largest
        totals = np.repeat(np.add.reduceat(relative, starts), counts)
        normalized = relative / totals
    return NormalizedInterests(
        user_ids=kept_users,
        subject_ids=catalogue.subject_ids[kept_pos],
        interest_ids=catalogue.interest_ids[kept_pos],
        weights=normalized,
        skipped=validate.classify_rows(n_rows, reasons),
    )


def document_frequency(
    index: InterestIndex, catalogue: InterestCatalogue
) -> tuple[npt.NDArray[np.int64], int]:
    """Users holding each catalogue interest, and users holding at least one.

    Entries whose interest is not in the catalogue are ignored (and a user left with none
    is not counted).

    Returns
    -------
    (df, n_users) : (k,) int64 aligned with ``catalogue.interest_ids``, and an int
    """
    if not isinstance(index, InterestIndex):
        raise TypeError(f"index must be an InterestIndex; got {type(index).__name__}")
    positions, found = validate.lookup(catalogue.interest_ids, index.interest_ids)
    owners = np.repeat(np.arange(len(index.user_ids)), np.diff(index.indptr))
    n_users = int(np.unique(owners[found]).size)
    # Entries are unique per (user, interest), so a count of entries is a count of users.
    df = np.bincount(positions[found], minlength=len(catalogue.interest_ids)).astype(np.int64)
    return df, n_users


def idf_from_counts(
    document_frequency: npt.NDArray[np.int64], n_users: int
) -> npt.NDArray[np.float64]:
    """``idf_i = log((1 + N) / (1 + df_i)) + 1``: every value >= 1 and finite.

    An interest nobody holds gets the maximum, ``log(1 + N) + 1``. Taking counts lets a
    single-user run add its own users' fresh counts to counts aggregated in the database,
    and get exactly the batch's IDF.

    Parameters
    ----------
    document_frequency : (k,) int
        Users holding each interest.
    n_users : int
        Users holding at least one interest.
    """
    df = np.asarray(document_frequency)
    if df.ndim != 1 or (df.size and (df.min() < 0 or df.max() > n_users)):
        raise ValueError(
            f"document_frequency must be 1-D counts in [0, n_users={n_users}]; got {df!r}"
        )
    return np.log((1.0 + n_users) / (1.0 + df.astype(np.float64))) + 1.0


def interest_idf(index: InterestIndex, catalogue: InterestCatalogue) -> npt.NDArray[np.float64]:
    """IDF of every catalogue interest over the users of ``index`` (see ``idf_from_counts``).

    Returns
    -------
    (k,) float64
        Aligned with ``catalogue.interest_ids``.
    """
    df, n_users = document_frequency(index, catalogue)
    return idf_from_counts(df, n_users)


def interest_placement(
    catalogue: InterestCatalogue, params: InterestParams
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Column and sign of every catalogue interest in the dense vector.

    Returns
    -------
    columns : (k,) int64 in ``[0, dim)``
    signs : (k,) float64 in ``{-1.0, +1.0}``
        Identity placement when ``k <= dim``, seeded hashing otherwise (see the
        module docstring). Each interest's hashed placement depends only on its
        id and the seed.
    """
    n_interests = len(catalogue.interest_ids)
    if n_interests <= params.dim:
        return np.arange(n_interests, dtype=np.int64), np.ones(n_interests, dtype=np.float64)
    seed_hash = _splitmix64(np.array([params.projection_seed], dtype=np.uint64))
    hashed = _splitmix64(catalogue.interest_ids.view(np.uint64) ^ seed_hash)
    columns = (hashed % np.uint64(params.dim)).astype(np.int64)
    signs = np.where((hashed >> np.uint64(63)) == 0, 1.0, -1.0)
    return columns, signs


def _splitmix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # Fixed, well-mixed integer hash: unlike numpy's RNG streams it can never
    # change between library versions. uint64 array arithmetic wraps silently.
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def interest_vectors(
    user_ids: npt.NDArray[np.int64],
    index: InterestIndex,
    catalogue: InterestCatalogue,
    params: InterestParams,
    idf: npt.NDArray[np.float64] | None,
) -> InterestVectors:
    """Dense, unit-length interest vectors for the requested users.

    Parameters
    ----------
    user_ids : (u,) int64, unique
        Users to produce vectors for; output keeps this order.
    index : InterestIndex
        Normalized interests (at least the requested users' rows).
    catalogue : InterestCatalogue
    params : InterestParams
    idf : (k,) float64 or None
        From :func:`interest_idf` over the whole population, aligned with
        ``catalogue.interest_ids``. Required when ``params.use_idf``, and must
        be None otherwise.

    Returns
    -------
    InterestVectors
        ``vectors`` is ``(m, params.dim)`` float32, finite, unit rows.
    """
    if not isinstance(index, InterestIndex):
        raise TypeError(f"index must be an InterestIndex; got {type(index).__name__}")
    if not isinstance(params, InterestParams):
        raise TypeError(f"params must be InterestParams; got {type(params).__name__}")
    user_ids = validate.as_ids("user_ids", user_ids)
    validate.check_unique("user_ids", user_ids)
    n_catalogue = len(catalogue.interest_ids)
    if params.use_idf:
        if idf is None:
            raise ValueError("idf is required when params.use_idf is True; got None")
        idf = validate.as_floats("idf", idf)
        if len(idf) != n_catalogue or not np.all(np.isfinite(idf) & (idf >= 0)):
            raise ValueError(
                f"idf must be ({n_catalogue},) finite and >= 0, aligned with the catalogue; "
                f"got shape {idf.shape}"
            )
    elif idf is not None:
        raise ValueError("idf must be None when params.use_idf is False; got an array")
    factors = idf if idf is not None else np.ones(n_catalogue, dtype=np.float64)
    columns, signs = interest_placement(catalogue, params)

    rows = index.rows_of(user_ids)
    lengths = _row_lengths(index, rows)
    out_row = np.repeat(np.arange(len(user_ids), dtype=np.int64), lengths)
    entry = np.repeat(index.indptr[rows], lengths) + _ranks_within(lengths)
    positions, found = validate.lookup(catalogue.interest_ids, index.interest_ids[entry])
    out_row, positions, entry = out_row[found], positions[found], entry[found]

    values = signs[positions] * index.weights[entry] * factors[positions]
    flat = out_row * params.dim + columns[positions]
    summed = np.bincount(flat, weights=values, minlength=len(user_ids) * params.dim)
    dense = summed.astype(np.float64, copy=False).reshape(len(user_ids), params.dim)
    n_interests = np.bincount(out_row, minlength=len(user_ids))
    normalized, nonzero = validate.l2_normalize_rows(dense)
    has_any = n_interests > 0
    emitted = has_any & nonzero
    return InterestVectors(
        user_ids=user_ids[emitted].copy(),
        vectors=np.ascontiguousarray(normalized[emitted], dtype=np.float32),
        n_interests=n_interests[emitted].astype(np.int32),
        skipped={
            "unknown_interest": int((~found).sum()),
            "no_interests": int((~has_any).sum()),
            "zero_vector": int((has_any & ~nonzero).sum()),
        },
    )


def _row_lengths(index: InterestIndex, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Entries per row; row -1 (no interests) picks the appended 0."""
    return np.append(np.diff(index.indptr), 0)[rows]


def _ranks_within(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """0, 1, ..., len-1 for each group of ``np.repeat(..., lengths)``."""
    total = int(lengths.sum())
    group_starts = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(group_starts, lengths)


def _check_pair_rows(
    index: InterestIndex, rows_a: npt.NDArray[np.int64], rows_b: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rows_a = validate.as_ids("rows_a", rows_a)
    rows_b = validate.as_ids("rows_b", rows_b)
    validate.check_same_length(rows_a=rows_a, rows_b=rows_b)
    n_rows = len(index.user_ids)
    for name, rows in (("rows_a", rows_a), ("rows_b", rows_b)):
        if len(rows) and (rows.min() < -1 or rows.max() >= n_rows):
            raise ValueError(
                f"{name} must be rows in [-1, {n_rows}); got range [{rows.min()}, {rows.max()}]"
            )
    return rows_a, rows_b


def _shared_entries(
    index: InterestIndex, rows_a: npt.NDArray[np.int64], rows_b: npt.NDArray[np.int64]
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]
]:
    """Entries shared by each pair: (pair, entry on the short side, entry on the long side).

    Walks the shorter row of each pair and looks each of its interests up in
    the longer row with one global ``searchsorted`` on the sorted merge keys.
    Ties on length go to the lower row number, so (a, b) and (b, a) perform
    identical arithmetic and give bit-identical sums.
    """
    len_a, len_b = _row_lengths(index, rows_a), _row_lengths(index, rows_b)
    has_both = (len_a > 0) & (len_b > 0)
    swap = (len_b < len_a) | ((len_b == len_a) & (rows_b < rows_a))
    # Where has_both is False nothing is expanded, so row -1 is never dereferenced.
    short_rows = np.where(swap, rows_b, rows_a)
    long_rows = np.where(swap, rows_a, rows_b)
    short_len = np.where(has_both, np.minimum(len_a, len_b), 0)

    pairs = np.repeat(np.arange(len(rows_a), dtype=np.int64), short_len)
    short_entries = np.repeat(index.indptr[short_rows], short_len) + _ranks_within(short_len)
    short_ranks = index._keys[short_entries] - short_rows[pairs] * index._n_ranks
    queries = long_rows[pairs] * index._n_ranks + short_ranks
    if len(queries) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty, has_both
    long_entries = np.searchsorted(index._keys, queries)
    np.minimum(long_entries, len(index._keys) - 1, out=long_entries)
    matched = index._keys[long_entries] == queries
    return pairs[matched], short_entries[matched], long_entries[matched], has_both


def interest_overlap(
    index: InterestIndex, rows_a: npt.NDArray[np.int64], rows_b: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Weighted interest overlap of many pairs, vectorized.

    ``overlap_ab = sum over shared interests i of min(w_ai, w_bi)``.

    Parameters
    ----------
    index : InterestIndex
    rows_a, rows_b : (p,) int64
        Rows of ``index`` (see :meth:`InterestIndex.rows_of`); -1 means the
        user has no interests.

    Returns
    -------
    overlap : (p,) float64
        In ``[0, 1]``, symmetric, finite; 0.0 where ``has_both`` is False.
    has_both : (p,) bool
        Both users have at least one interest. Where False the overlap is
        undefined and the caller applies its neutral value.
    """
    if not isinstance(index, InterestIndex):
        raise TypeError(f"index must be an InterestIndex; got {type(index).__name__}")
    rows_a, rows_b = _check_pair_rows(index, rows_a, rows_b)
    pairs, short_entries, long_entries, has_both = _shared_entries(index, rows_a, rows_b)
    shared = np.minimum(index.weights[short_entries], index.weights[long_entries])
    overlap = np.bincount(pairs, weights=shared, minlength=len(rows_a)).astype(np.float64)
    np.clip(overlap, 0.0, 1.0, out=overlap)
    return overlap, has_both


def shared_interests(
    index: InterestIndex,
    rows_a: npt.NDArray[np.int64],
    rows_b: npt.NDArray[np.int64],
    top_n: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The ``top_n`` shared interests of each pair, by ``min(w_a, w_b)`` descending.

    Ties are broken by ascending interest id, so the result is deterministic
    and symmetric in (a, b).

    Parameters
    ----------
    index : InterestIndex
    rows_a, rows_b : (p,) int64
        Rows of ``index``; -1 means no interests.
    top_n : int
        >= 1.

    Returns
    -------
    interest_ids : (p, top_n) int64
        Padded with -1 where a pair shares fewer interests.
    min_weights : (p, top_n) float64
        The matching ``min(w_a, w_b)``; 0.0 in padded slots.
    """
    if not isinstance(index, InterestIndex):
        raise TypeError(f"index must be an InterestIndex; got {type(index).__name__}")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"top_n must be an int >= 1; got {top_n!r}")
    rows_a, rows_b = _check_pair_rows(index, rows_a, rows_b)
    pairs, short_entries, long_entries, _ = _shared_entries(index, rows_a, rows_b)
    shared = np.minimum(index.weights[short_entries], index.weights[long_entries])
    ids = index.interest_ids[short_entries]
    order = np.lexsort((ids, -shared, pairs))
    pairs, shared, ids = pairs[order], shared[order], ids[order]
    counts = np.bincount(pairs, minlength=len(rows_a))
    slot = _ranks_within(counts)
    keep = slot < top_n
    interest_ids = np.full((len(rows_a), top_n), -1, dtype=np.int64)
    min_weights = np.zeros((len(rows_a), top_n), dtype=np.float64)
    interest_ids[pairs[keep], slot[keep]] = ids[keep]
    min_weights[pairs[keep], slot[keep]] = shared[keep]
    return interest_ids, min_weights
