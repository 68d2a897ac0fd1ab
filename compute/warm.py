"""Keep a loaded population current: replace the rows of the users a batch touched.

The event worker loads the population once and then, per batch, re-reads only the users
its events touched. :func:`replace_users` splices their fresh rows into the population it
holds — touched users replaced, new ones added, those who are gone (inactive, deleted)
removed, their exclusions re-derived from the pairs read now — so that the result equals
what a whole load would give, row for row (rows stay sorted by user id, as the loader
aligns them). :func:`conform` first drops fresh vectors of another width than the
population's, as a whole load counts them; :func:`take_ids` then cuts a batch's candidate
region out of the result.

Nothing here knows a clock: ages, account ages and inactivity are the caller's to recompute
at each batch's ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from compute import validate
from compute.population import PER_USER_FIELDS, Population

IdArray = npt.NDArray[np.int64]
# Up to this many replaced rows, a batch that adds or removes nobody overwrites them in place
# of the general splice (a loop over their CSR segments; more rows take the general path).
_SPLICE_MAX = 512


def _rows_of(sorted_ids: IdArray, ids: IdArray) -> tuple[IdArray, npt.NDArray[np.bool_]]:
    """Row of each id in ``sorted_ids`` and whether it is there."""
    if sorted_ids.size == 0:
        return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=np.bool_)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1).astype(np.int64)
    return pos, sorted_ids[pos] == ids


def _ids(name: str, values: npt.ArrayLike) -> IdArray:
    """``values`` as sorted distinct int64 ids (an empty list is no ids, whatever its dtype)."""
    array = np.asarray(values).reshape(-1)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.unique(validate.as_ids(name, array))


def _check_sorted(name: str, ids: IdArray) -> None:
    if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError(f"{name}.user_ids must be strictly increasing (as loaded)")


# Fields that share one width (a Population requires it) and the flags of their values.
_WIDTH_GROUPS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("quiz_vectors",), ("has_quiz",)),
    (("interest_vectors",), ("has_interest",)),
    (("rating_dims", "rating_preferences"), ("has_rating_quality", "has_preference")),
    (("taste_vectors", "appeal_vectors"), ("has_taste", "has_appeal")),
)


def _holds_values(pop: Population, flags: tuple[str, ...]) -> bool:
    return any(bool(getattr(pop, flag).any()) for flag in flags)


def incompatible_fields(pop: Population, fresh: Population) -> list[str]:
    """The (n, d) fields whose width differs between ``pop`` and ``fresh`` while both hold
    a value somewhere: such rows cannot be spliced (:func:`conform` them first).

    A side with no value at all may differ in width: its zero rows are re-shaped to the
    other's, as a whole load, which sizes a field by the rows it finds, would do.
    """
    bad: list[str] = []
    for names, flags in _WIDTH_GROUPS:
        if getattr(pop, names[0]).shape[1] == getattr(fresh, names[0]).shape[1]:
            continue
        if _holds_values(pop, flags) and _holds_values(fresh, flags):
            bad.extend(names)
    return bad


# Scalars that hold a value only with a group's flag (zeroed with it).
_FLAGGED_SCALARS = {"has_rating_quality": "rating_quality"}


def conform(pop: Population, fresh: Population) -> tuple[Population, dict[str, int]]:
    """``fresh`` with the vectors that do not fit ``pop`` dropped, and how many were.

    A whole load sizes each vector field by the width most of its rows have and counts a
    row of another width as a bad blob (``bad_vector_blob``), which is then absent. A
    handful of fresh rows read alone are sized by themselves, so a touched user whose
    vector has another width than the population's (a quiz written for another set of
    questions) would not fit: as the whole load would, those values are made absent and
    counted, rather than forcing a reload of everyone at every batch that touches them.

    Returns
    -------
    fresh : Population
        Unchanged when everything fits; else the misfit groups zeroed (at ``pop``'s width)
        with their flags cleared.
    counts : dict[str, int]
        ``{"bad_vector_blob": n}``: the fresh values dropped.
    """
    changes: dict[str, Any] = {}
    dropped = 0
    for names, flags in _WIDTH_GROUPS:
        width = getattr(pop, names[0]).shape[1]
        if getattr(fresh, names[0]).shape[1] == width:
            continue
        if not (_holds_values(pop, flags) and _holds_values(fresh, flags)):
            continue  # a side without values: replace_users reshapes its zeros
        for name in names:
            changes[name] = np.zeros((fresh.n_users, width), dtype=getattr(fresh, name).dtype)
        for flag in flags:
            dropped += int(getattr(fresh, flag).sum())
            changes[flag] = np.zeros(fresh.n_users, dtype=np.bool_)
            if flag in _FLAGGED_SCALARS:
                scalar = _FLAGGED_SCALARS[flag]
                changes[scalar] = np.zeros(fresh.n_users, dtype=getattr(fresh, scalar).dtype)
    if not changes:
        return fresh, {"bad_vector_blob": 0}
    return replace(fresh, **changes), {"bad_vector_blob": dropped}


def _widths(pop: Population, fresh: Population) -> dict[str, int]:
    """The width of every (n, d) field of the spliced population."""
    widths: dict[str, int] = {}
    for names, flags in _WIDTH_GROUPS:
        fresh_wins = _holds_values(fresh, flags) and not _holds_values(pop, flags)
        width = getattr(fresh if fresh_wins else pop, names[0]).shape[1]
        widths.update(dict.fromkeys(names, width))
    return widths


def _take_csr(
    indptr: IdArray, rows: IdArray, *columns: npt.NDArray[Any]
) -> tuple[IdArray, list[npt.NDArray[Any]]]:
    """The CSR segments of ``rows``, in that order."""
    lengths = np.diff(indptr)[rows]
    starts = indptr[:-1][rows]
    offsets = np.cumsum(lengths) - lengths
    entry = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    new_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return new_indptr, [c[entry] for c in columns]


def exclusion_id_pairs(pop: Population) -> IdArray:
    """(nnz_e, 2) int64: every exclusion of ``pop`` as (owner user id, other user id)."""
    owners = np.repeat(np.arange(pop.n_users, dtype=np.int64), np.diff(pop.excluded_indptr))
    return np.stack([pop.user_ids[owners], pop.user_ids[pop.excluded_rows]], axis=1)


def replace_users(
    pop: Population,
    fresh: Population,
    touched_ids: npt.ArrayLike,
    exclusion_pairs: npt.ArrayLike,
) -> Population:
    """Return ``pop`` with the touched users' rows replaced by ``fresh``'s.

    Parameters
    ----------
    pop : Population
        The population held, rows sorted by ``user_ids`` (as loaded).
    fresh : Population
        The touched users that are active now, read now, sorted by ``user_ids``; each must
        be in ``touched_ids``. Its exclusions are ignored (``exclusion_pairs`` carries
        them); its interest catalogue replaces ``pop``'s.
    touched_ids : (t,) int
        Every user whose rows were read again. Those in ``pop`` are replaced (or removed
        when absent from ``fresh``: inactive or gone); those only in ``fresh`` are added.
    exclusion_pairs : (k, 2) int
        User ids ``(a, b)``: every like, pass or block with ``a`` or ``b`` touched, read now
        (a like and a pass between the same users may both appear). Pairs with an end that
        is in neither population are dropped, as a load drops them.

    Returns
    -------
    Population
        Rows sorted by user id: the untouched rows of ``pop`` unchanged, ``fresh``'s rows
        where they belong. Exclusions between untouched users are kept; every exclusion
        with a touched end comes from ``exclusion_pairs``.
    """
    touched = _ids("touched_ids", touched_ids)
    pairs = np.asarray(exclusion_pairs)
    if pairs.size == 0:
        pairs = np.empty((0, 2), dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind not in "iu":
        raise ValueError(
            f"exclusion_pairs must be (k, 2) integer user ids; got {pairs.shape} {pairs.dtype}"
        )
    pairs = pairs.astype(np.int64)
    _check_sorted("pop", pop.user_ids)
    _check_sorted("fresh", fresh.user_ids)
    _, fresh_touched = _rows_of(touched, fresh.user_ids)
    if not fresh_touched.all():
        raise ValueError(
            "fresh users must all be in touched_ids; not: "
            f"{fresh.user_ids[~fresh_touched][:5].tolist()}"
        )
    _, first_touched = _rows_of(touched, pairs[:, 0])
    _, second_touched = _rows_of(touched, pairs[:, 1])
    if not (first_touched | second_touched).all():
        raise ValueError("every exclusion pair must have a touched end")
    bad = incompatible_fields(pop, fresh)
    if bad:
        raise ValueError(
            f"fresh rows do not fit: {', '.join(bad)} have widths "
            f"{[getattr(fresh, b).shape[1] for b in bad]}, the population's "
            f"{[getattr(pop, b).shape[1] for b in bad]}"
        )

    n = pop.n_users
    _, old_touched = _rows_of(touched, pop.user_ids)
    replaced = np.flatnonzero(old_touched).astype(np.int64)
    widths = _widths(pop, fresh)
    if (
        replaced.size <= _SPLICE_MAX
        and replaced.size == fresh.n_users
        and np.array_equal(pop.user_ids[replaced], fresh.user_ids)
    ):
        return _replace_rows(pop, fresh, replaced, pairs, widths)
    old_rows = np.flatnonzero(~old_touched).astype(np.int64)
    user_ids = np.concatenate([pop.user_ids[old_rows], fresh.user_ids])
    order = np.argsort(user_ids, kind="stable")
    user_ids = user_ids[order]
    n_out = user_ids.size
    # result row -> row of pop (< n) or n + row of fresh
    source = np.concatenate([old_rows, n + np.arange(fresh.n_users, dtype=np.int64)])[order]
    from_old = source < n
    old_at = np.flatnonzero(from_old)
    fresh_at = np.flatnonzero(~from_old)

    values: dict[str, Any] = {}
    for name in PER_USER_FIELDS:
        mine, theirs = getattr(pop, name), getattr(fresh, name)
        if name in widths:
            # A side without any value may have another width: reshape its zeros.
            if mine.shape[1] != widths[name]:
                mine = np.zeros((n, widths[name]), dtype=mine.dtype)
            if theirs.shape[1] != widths[name]:
                theirs = np.zeros((fresh.n_users, widths[name]), dtype=theirs.dtype)
        out = np.empty((n_out, *mine.shape[1:]), dtype=mine.dtype)
        out[old_at] = mine[source[old_at]]
        out[fresh_at] = theirs
        values[name] = out

    # Interests: both CSRs as one, then the segments of the result's rows.
    interest_indptr = np.concatenate(
        [pop.interest_indptr, fresh.interest_indptr[1:] + pop.interest_indptr[-1]]
    )
    values["interest_indptr"], (values["interest_ids"], values["interest_weights"]) = _take_csr(
        interest_indptr,
        source,
        np.concatenate([pop.interest_ids, fresh.interest_ids]),
        np.concatenate([pop.interest_weights, fresh.interest_weights]),
    )
    values["catalogue_interest_ids"] = fresh.catalogue_interest_ids
    values["catalogue_interest_names"] = fresh.catalogue_interest_names

    values["excluded_indptr"], values["excluded_rows"] = _exclusions(
        pop, old_rows, old_at, user_ids, pairs
    )
    return Population(**values)


def _fitted(array: npt.NDArray[Any], width: int | None) -> npt.NDArray[Any]:
    """``array`` as one side of a spliced field: a side of another width holds no value
    (``_widths``), so its zero rows are re-shaped to the result's width."""
    if width is None or array.shape[1] == width:
        return array
    return np.zeros((array.shape[0], width), dtype=array.dtype)


def _replace_rows(
    pop: Population, fresh: Population, rows: IdArray, pairs: IdArray, widths: dict[str, int]
) -> Population:
    """``replace_users`` when the touched users are exactly the held ``rows`` (nobody joins
    or leaves: a quiz, a profile edit, a like): rows keep their places, so each field is a
    copy with those rows overwritten, and each CSR keeps every segment but theirs. The
    same result as the general splice, without regathering every row and entry."""
    values: dict[str, Any] = {}
    for name in PER_USER_FIELDS:
        width = widths.get(name)
        out = _fitted(getattr(pop, name), width).copy()
        out[rows] = _fitted(getattr(fresh, name), width)
        values[name] = out
    lengths = np.diff(pop.interest_indptr)
    lengths[rows] = np.diff(fresh.interest_indptr)
    values["interest_indptr"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for name in ("interest_ids", "interest_weights"):
        values[name] = _splice_segments(
            pop.interest_indptr,
            getattr(pop, name),
            rows,
            fresh.interest_indptr,
            getattr(fresh, name),
        )
    values["catalogue_interest_ids"] = fresh.catalogue_interest_ids
    values["catalogue_interest_names"] = fresh.catalogue_interest_names

    # Exclusions: drop every key with a replaced end, then add the pairs read now. Keys
    # (owner row · n + other row) are sorted; a replaced owner's keys are one run of them.
    n, keys = pop.n_users, pop.excluded_keys
    keep = ~np.isin(pop.excluded_rows, rows)
    owned = np.searchsorted(keys, rows * n), np.searchsorted(keys, (rows + 1) * n)
    for lo, hi in zip(*owned, strict=True):
        keep[lo:hi] = False
    a, a_found = _rows_of(pop.user_ids, pairs[:, 0])
    b, b_found = _rows_of(pop.user_ids, pairs[:, 1])
    both = a_found & b_found
    new_keys = np.unique(np.concatenate([a[both] * n + b[both], b[both] * n + a[both]]))
    kept = keys[keep]
    keys = np.insert(kept, np.searchsorted(kept, new_keys), new_keys.astype(np.int64))
    counts = np.bincount(keys // max(n, 1), minlength=n)
    values["excluded_indptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    values["excluded_rows"] = (keys % max(n, 1)).astype(np.int64)
    return Population(**values)


def _splice_segments(
    indptr: IdArray,
    column: npt.NDArray[Any],
    rows: IdArray,
    fresh_indptr: IdArray,
    fresh_column: npt.NDArray[Any],
) -> npt.NDArray[Any]:
    """``column``'s CSR entries with the segments of sorted ``rows`` replaced, in order, by
    ``fresh_column``'s segments (one per row)."""
    pieces: list[npt.NDArray[Any]] = []
    at = 0
    for i, row in enumerate(rows.tolist()):
        pieces.append(column[at : indptr[row]])
        pieces.append(fresh_column[fresh_indptr[i] : fresh_indptr[i + 1]])
        at = int(indptr[row + 1])
    pieces.append(column[at:])
    return np.concatenate(pieces).astype(column.dtype, copy=False)


def _exclusions(
    pop: Population, old_rows: IdArray, old_at: IdArray, user_ids: IdArray, pairs: IdArray
) -> tuple[IdArray, IdArray]:
    """The result's exclusion CSR: ``pop``'s between untouched users, then ``pairs``."""
    n_out = max(user_ids.size, 1)
    moved = np.full(pop.n_users, -1, dtype=np.int64)
    moved[old_rows] = old_at  # touched rows map to -1: their pairs come from ``pairs``
    owners = moved[np.repeat(np.arange(pop.n_users, dtype=np.int64), np.diff(pop.excluded_indptr))]
    others = moved[pop.excluded_rows]
    kept = (owners >= 0) & (others >= 0)
    # Row order is kept (untouched rows keep their relative order), so these keys are
    # already sorted and distinct: only the few fresh ones need placing.
    old_keys = owners[kept] * n_out + others[kept]
    a, a_found = _rows_of(user_ids, pairs[:, 0])
    b, b_found = _rows_of(user_ids, pairs[:, 1])
    both = a_found & b_found
    new_keys = np.unique(
        np.concatenate([a[both] * n_out + b[both], b[both] * n_out + a[both]])
    ).astype(np.int64)
    if new_keys.size:
        _, already = _rows_of(old_keys, new_keys)
        new_keys = new_keys[~already]
        keys = np.insert(old_keys, np.searchsorted(old_keys, new_keys), new_keys)
    else:
        keys = old_keys
    counts = np.bincount(keys // n_out, minlength=user_ids.size)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, (keys % n_out).astype(np.int64)


def take_ids(pop: Population, ids: npt.ArrayLike) -> Population:
    """``pop`` restricted to the users among ``ids`` it holds, in id order.

    Parameters
    ----------
    pop : Population
        Rows sorted by user id.
    ids : (m,) int
        Users wanted (a candidate region); ids ``pop`` does not hold are ignored.

    Returns
    -------
    Population
        As a load of those users would give: exclusions with an end outside are dropped.
    """
    wanted = _ids("ids", ids)
    rows, found = _rows_of(pop.user_ids, wanted)
    rows = rows[found]
    if rows.size == pop.n_users:
        return pop
    return pop.subset_rows(rows)


@dataclass(frozen=True, eq=False)
class RegionColumns:
    """The users columns a candidate region is cut by, as stored (NaN = NULL).

    Attributes
    ----------
    user_ids : (n,) int64, sorted
    gender, seeking_mask : (n,) float64
        The stored codes (a NULL is NaN; no clipping: the region compares stored values).
    latitude, longitude, max_distance_km : (n,) float64
    """

    user_ids: IdArray
    gender: npt.NDArray[np.float64]
    seeking_mask: npt.NDArray[np.float64]
    latitude: npt.NDArray[np.float64]
    longitude: npt.NDArray[np.float64]
    max_distance_km: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = self.user_ids.shape[0]
        for name in ("gender", "seeking_mask", "latitude", "longitude", "max_distance_km"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},); got {getattr(self, name).shape}")


def _bit_set(codes: npt.NDArray[np.float64], bit: int) -> npt.NDArray[np.bool_]:
    """``codes & (1 << bit) != 0`` as SQL evaluates it (a NULL code: false)."""
    known = np.isfinite(codes)
    ints = np.where(known, codes, 0).astype(np.int64)
    return known & ((ints >> bit) & 1).astype(np.bool_)


def candidate_region(
    columns: RegionColumns,
    target_ids: npt.ArrayLike,
    default_max_distance_km: float,
    margin_deg: float = 0.0,
) -> IdArray:
    """The targets held plus every user who could pass a target's gender and distance filters.

    The in-memory twin of ``jobs.storage.population.candidate_region`` (same boxes, same
    rounding, so the same ids for the same rows): users of a gender the target seeks who
    seek the target's gender, inside a latitude/longitude box of the target's distance limit
    widened by ``margin_deg``, or without a location; a target without a finite location or
    limit gets every gender-compatible user, and a target without a gender adds nobody.

    Parameters
    ----------
    columns : RegionColumns
        Every user who may be a candidate (the held active population).
    target_ids : (t,) int
        Targets not among ``columns`` are ignored (not held: not scored).
    default_max_distance_km : float
        The limit of a target whose own is NULL.
    margin_deg : float
        Added to both half-widths of every box (the geo cell size).

    Returns
    -------
    (m,) int64, sorted: ids of ``columns.user_ids``.
    """
    ids = columns.user_ids
    targets = _ids("target_ids", target_ids)
    rows, found = _rows_of(ids, targets)
    rows = rows[found]
    keep = np.zeros(ids.size, dtype=np.bool_)
    keep[rows] = True
    no_location = np.isnan(columns.latitude) | np.isnan(columns.longitude)
    seeks_gender = [_bit_set(columns.seeking_mask, g) for g in range(3)]
    gender = columns.gender
    for row in rows.tolist():
        g = gender[row]
        if not np.isfinite(g):
            continue
        mask_code = columns.seeking_mask[row]
        sought = [k for k in range(3) if np.isfinite(mask_code) and int(mask_code) >> k & 1]
        match = np.isin(gender, np.asarray(sought, dtype=np.float64)) & seeks_gender[int(g)]
        limit = columns.max_distance_km[row]
        limit = default_max_distance_km if np.isnan(limit) else float(limit)
        lat, lon = float(columns.latitude[row]), float(columns.longitude[row])
        if np.isfinite([lat, lon, limit]).all():
            dlat = limit / 110.574 + 0.01
            coslat = max(float(np.cos(np.radians(min(abs(lat) + dlat, 89.9)))), 1e-3)
            dlon = limit / (111.320 * coslat) + 0.01 + margin_deg
            dlat += margin_deg
            inside = (
                (columns.latitude >= lat - dlat)
                & (columns.latitude <= lat + dlat)
                & (columns.longitude >= lon - dlon)
                & (columns.longitude <= lon + dlon)
            )
            match &= no_location | inside
        keep |= match
    return ids[keep]
