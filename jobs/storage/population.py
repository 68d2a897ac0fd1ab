"""Load the match job's :class:`compute.population.Population` from the signal tables.

One columnar read per table for the whole active population (no per-user queries): users,
quiz vectors, interest vectors, the interest index and catalogue, the rating standing and
preferences the ratings job wrote (never the raw ratings), and likes/passes/blocks. Rows are
aligned on the sorted ids of the active users, so two loads of the same data give identical
arrays (the single-user path and the nightly build the same indexes from them).

Values that cannot be used are *data*, not errors: a NULL birth date gives a NaN age (the
population validator then drops the user as ``age_out_of_range``), a NULL gender gives code
-1 (``bad_gender``), a vector blob of the wrong size is treated as absent
(``bad_vector_blob``), an interest-index row naming an interest missing from the catalogue is
dropped (``unknown_interest``). Those counts are returned for the run's metadata.

Why one file of ~620 lines: one reader per signal table, all aligned on the same sorted
active ids, and the snapshot the publish guard compares against; they change together.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from compute import ratings
from compute.population import Population
from jobs.errors import ConfigError
from jobs.storage import bulk, schema
from jobs.storage import signals as signal_store

_SECONDS_PER_DAY = 86_400.0


@dataclasses.dataclass(frozen=True)
class LoadParams:
    """What the loader needs from config (kept separate so storage never sees ``Config``)."""

    default_max_distance_km: float
    # ``ratings.dimension_weights`` as (dimension name, weight) pairs: how rating_quality
    # weighs the rating dimensions (empty: alike, as the ratings job wrote it).
    rating_dimension_weights: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class Loaded:
    """A loaded population and what was dropped while loading it."""

    population: Population
    skipped: dict[str, int]
    rows_read: int
    # The users rows behind the population, aligned by row: what ages, account ages and
    # inactivity are computed from (the warm worker recomputes them at each batch's now).
    users: pd.DataFrame | None = None


def _days_between(now: dt.datetime, stamps: pd.Series) -> npt.NDArray[np.float32]:
    """Days from each UTC timestamp to ``now``; NaN for NULL."""
    now_ts = pd.Timestamp(now).tz_convert("UTC")
    delta = (now_ts - pd.to_datetime(stamps, utc=True)).dt.total_seconds()
    return (delta.to_numpy(dtype=np.float64, na_value=np.nan) / _SECONDS_PER_DAY).astype(np.float32)


def _ages(now: dt.datetime, birth_dates: pd.Series) -> npt.NDArray[np.float32]:
    """Calendar age in completed years at ``now`` (UTC date); NaN for NULL.

    Whole years, as a person counts them: one turns 34 on the 34th birthday, not 0.2 days
    earlier as ``days / 365.25`` had it (a user turning 34 today passed an ``age_max: 33``
    limit). Someone born on 29 February turns a year older on 1 March in common years.
    """
    today = pd.Timestamp(now).tz_convert("UTC")
    births = pd.to_datetime(birth_dates)
    years = (today.year - births.dt.year).to_numpy(dtype=np.float64, na_value=np.nan)
    month = births.dt.month.to_numpy(dtype=np.float64, na_value=np.nan)
    day = births.dt.day.to_numpy(dtype=np.float64, na_value=np.nan)
    before_birthday = (month > today.month) | ((month == today.month) & (day > today.day))
    return (years - before_birthday).astype(np.float32)


# Every users column a hard filter reads (directly or through age): a change to any of them
# between a run's read and its publish can make a computed pair forbidden.
FILTER_COLUMNS: tuple[str, ...] = (
    "is_active",
    "birth_date",
    "gender",
    "seeking_mask",
    "age_min",
    "age_max",
    "max_distance_km",
    "latitude",
    "longitude",
)


@dataclasses.dataclass(frozen=True, eq=False)
class FilterSnapshot:
    """Per user, a digest of the :data:`FILTER_COLUMNS` as one read saw them.

    Taken *before* a run loads the population, so any change after the load is seen as a
    change at publish time (a change between snapshot and load is seen too: harmlessly).

    Attributes
    ----------
    user_ids : (m,) int64, sorted
    digests : (m,) uint64
    """

    user_ids: npt.NDArray[np.int64]
    digests: npt.NDArray[np.uint64]


def _filter_digests(users: pd.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
    """Sorted ids and digests; every column as float64 so that a NULL elsewhere in the table
    (which turns an integer column into floats) never changes anybody's digest."""
    users = users.sort_values("id", kind="stable")
    births = pd.to_datetime(users["birth_date"]).to_numpy(dtype="datetime64[D]")
    days = births.astype(np.int64).astype(np.float64)
    days[np.isnat(births)] = np.nan
    columns: dict[str, npt.NDArray[np.float64]] = {"birth_date": days}
    for name in FILTER_COLUMNS:
        if name != "birth_date":
            columns[name] = _float_column(users, name)
    frame = pd.DataFrame(columns, columns=list(FILTER_COLUMNS))
    digests = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    return users["id"].to_numpy(dtype=np.int64), digests


def filter_snapshot(
    conn: sa.Connection, user_ids: npt.NDArray[np.int64] | None = None
) -> FilterSnapshot:
    """The filter columns' digests of every user (or of ``user_ids``), as of now."""
    users = signal_store.read(conn, schema.users, "id", user_ids, columns=("id", *FILTER_COLUMNS))
    ids, digests = _filter_digests(users)
    return FilterSnapshot(user_ids=ids, digests=digests)


def changed_since(
    conn: sa.Connection,
    snapshot: FilterSnapshot,
    user_ids: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Sorted ids among ``user_ids`` (default: the snapshot's) that changed since ``snapshot``.

    Changed: a filter column differs now, the user row is gone, or the snapshot never saw
    the user (created after it, so nothing says what it looked like when it was read).
    """
    ids = snapshot.user_ids if user_ids is None else np.unique(np.asarray(user_ids, np.int64))
    if ids.size == 0:
        return np.empty(0, dtype=np.int64)
    then_pos, then_found = _rows_of(snapshot.user_ids, ids)
    current = filter_snapshot(conn, ids[then_found])
    now_pos, now_found = _rows_of(current.user_ids, ids)
    same = then_found & now_found
    same[same] = current.digests[now_pos[same]] == snapshot.digests[then_pos[same]]
    return ids[~same]


def _int_column(frame: pd.DataFrame, name: str, missing: int) -> npt.NDArray[np.int64]:
    series = frame[name]
    if series.isna().any():
        return series.fillna(missing).to_numpy(dtype=np.int64)
    return series.to_numpy(dtype=np.int64)


def _float_column(frame: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


@dataclasses.dataclass(frozen=True, eq=False)
class _Stored:
    """A per-user vector table read into rows aligned with the loaded ``user_ids``.

    ``columns`` holds the requested scalar columns, 0 where the user has no usable row.
    """

    vectors: npt.NDArray[np.float32]
    present: npt.NDArray[np.bool_]
    columns: dict[str, npt.NDArray[np.float64]]
    rows_read: int
    bad_blobs: int


def _vectors(
    conn: sa.Connection,
    table: sa.Table,
    user_ids: npt.NDArray[np.int64],
    scope: npt.NDArray[np.int64] | None,
    *,
    key: str = "user_id",
    blob: str = "vector",
    scalars: tuple[str, ...] = (),
) -> _Stored:
    """(n, d) vectors of ``table`` aligned with ``user_ids``; a blob of the wrong size is bad."""
    frame = signal_store.read(conn, table, key, scope, columns=(key, "dim", blob, *scalars))
    rows, found = _rows_of(user_ids, frame[key].to_numpy(dtype=np.int64))
    frame = frame[found]
    rows = rows[found]
    dims = frame["dim"].to_numpy(dtype=np.int64)
    dim = int(np.bincount(dims).argmax()) if dims.size else 1
    # A NULL blob (the likes job stores taste and appeal apart) is no vector, not a bad one.
    stored = frame[blob].notna().to_numpy(dtype=np.bool_)
    blob_sizes = np.fromiter(
        (len(b) if isinstance(b, bytes | bytearray | memoryview) else -1 for b in frame[blob]),
        dtype=np.int64,
        count=len(frame),
    )
    ok = stored & (dims == dim) & (blob_sizes == 4 * dim)
    vectors = np.zeros((user_ids.size, dim), dtype=np.float32)
    present = np.zeros(user_ids.size, dtype=np.bool_)
    columns = {name: np.zeros(user_ids.size, dtype=np.float64) for name in scalars}
    if ok.any():
        vectors[rows[ok]] = signal_store.bytes_to_vectors(frame[blob][ok], dim)
        present[rows[ok]] = True
        for name in scalars:
            columns[name][rows[ok]] = _float_column(frame, name)[ok]
    return _Stored(vectors, present, columns, len(frame), int((stored & ~ok).sum()))


def _behaviour(
    conn: sa.Connection,
    user_ids: npt.NDArray[np.int64],
    scope: npt.NDArray[np.int64] | None,
) -> tuple[dict[str, npt.NDArray[Any]], int, int]:
    """The likes job's taste and appeal vectors and shrunk like rate given, aligned with
    ``user_ids`` (zeros where absent): the Population fields, rows read and bad blobs."""
    taste = _vectors(conn, schema.user_taste_vectors, user_ids, scope, blob="taste")
    appeal = _vectors(conn, schema.user_taste_vectors, user_ids, scope, blob="appeal")
    rates = signal_store.read(
        conn, schema.user_like_behaviour, "user_id", scope, columns=("user_id", "rate_given")
    )
    rows, found = _rows_of(user_ids, rates["user_id"].to_numpy(dtype=np.int64))
    rate = _float_column(rates, "rate_given")
    ok = found & np.isfinite(rate) & (rate >= 0) & (rate <= 1)
    rate_given = np.zeros(user_ids.size, dtype=np.float32)
    has_rate = np.zeros(user_ids.size, dtype=np.bool_)
    rate_given[rows[ok]] = rate[ok]
    has_rate[rows[ok]] = True
    fields: dict[str, npt.NDArray[Any]] = {
        "taste_vectors": taste.vectors,
        "has_taste": taste.present,
        "appeal_vectors": appeal.vectors,
        "has_appeal": appeal.present,
        "like_rate_given": rate_given,
        "has_like_rate": has_rate,
    }
    return fields, taste.rows_read + len(rates), taste.bad_blobs + appeal.bad_blobs


def _taste_vectors(
    conn: sa.Connection,
    user_ids: npt.NDArray[np.int64],
    scope: npt.NDArray[np.int64] | None,
) -> tuple[dict[str, npt.NDArray[Any]], int, int]:
    """The likes job's taste and appeal vectors aligned with ``user_ids`` (zeros where NULL).

    Returns the Population fields, rows read and bad blobs (a wrong size or minority dim).
    """
    frame = signal_store.read(
        conn,
        schema.user_taste_vectors,
        "user_id",
        scope,
        columns=("user_id", "dim", "taste", "appeal"),
    )
    rows, found = _rows_of(user_ids, frame["user_id"].to_numpy(dtype=np.int64))
    frame = frame[found]
    rows = rows[found]
    dims = frame["dim"].to_numpy(dtype=np.int64)
    dim = int(np.bincount(dims).argmax()) if dims.size else 1
    fields: dict[str, npt.NDArray[Any]] = {}
    bad = 0
    for column, present_name in (("taste", "has_taste"), ("appeal", "has_appeal")):
        blobs = frame[column]
        stored = blobs.notna().to_numpy()
        sizes = blobs.map(lambda b: len(b) if isinstance(b, bytes | bytearray) else -1).to_numpy(
            dtype=np.int64
        )
        ok = stored & (dims == dim) & (sizes == 4 * dim)
        bad += int((stored & ~ok).sum())
        vectors = np.zeros((user_ids.size, dim), dtype=np.float32)
        present = np.zeros(user_ids.size, dtype=np.bool_)
        if ok.any():
            vectors[rows[ok]] = signal_store.bytes_to_vectors(blobs[ok], dim)
            present[rows[ok]] = True
        fields[f"{column}_vectors"] = vectors
        fields[present_name] = present
    return fields, len(frame), bad


def _like_rates(
    conn: sa.Connection,
    user_ids: npt.NDArray[np.int64],
    scope: npt.NDArray[np.int64] | None,
) -> tuple[dict[str, npt.NDArray[Any]], int]:
    """The likes job's shrunk like rate given, aligned with ``user_ids``, and rows read."""
    frame = signal_store.read(
        conn, schema.user_like_behaviour, "user_id", scope, columns=("user_id", "rate_given")
    )
    rows, found = _rows_of(user_ids, frame["user_id"].to_numpy(dtype=np.int64))
    rate = pd.to_numeric(frame["rate_given"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    ok = found & np.isfinite(rate) & (rate >= 0) & (rate <= 1)
    values = np.zeros(user_ids.size, dtype=np.float32)
    present = np.zeros(user_ids.size, dtype=np.bool_)
    values[rows[ok]] = rate[ok]
    present[rows[ok]] = True
    return {"like_rate_given": values, "has_like_rate": present}, len(frame)


def _rows_of(
    sorted_ids: npt.NDArray[np.int64], ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Row of each id in ``sorted_ids`` and whether it is there."""
    if sorted_ids.size == 0:
        return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=np.bool_)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return pos.astype(np.int64), sorted_ids[pos] == ids


def _csr(
    n: int, owners: npt.NDArray[np.int64], *columns: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[Any]]]:
    order = np.argsort(owners, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(owners, minlength=n))]).astype(np.int64)
    return indptr, [c[order] for c in columns]


def load(
    conn: sa.Connection,
    now: dt.datetime,
    params: LoadParams,
    user_ids: npt.NDArray[np.int64] | None = None,
) -> Loaded:
    """Read every active user's filter fields and signals into one :class:`Population`.

    Parameters
    ----------
    conn : Connection
    now : datetime
        UTC; ages, account ages and inactivity are measured at this instant.
    params : LoadParams
    user_ids : (m,) int64, optional
        Load only these users (the single-user path loads a user's :func:`candidate_region`);
        a user's rows are identical to a whole load's.
    """
    scope = user_ids
    users, rows_read = _active_users(conn, scope)
    user_ids = users["id"].to_numpy(dtype=np.int64)
    quiz = _vectors(conn, schema.user_quiz_vectors, user_ids, scope)
    interest = _vectors(conn, schema.user_interest_vectors, user_ids, scope)
    lists = _interest_lists(conn, user_ids, scope)
    rating = _rating_signals(conn, user_ids, scope, dict(params.rating_dimension_weights))
    exclusions = _exclusions(conn, user_ids, scope)
    behaviour, behaviour_read, behaviour_bad = _behaviour(conn, user_ids, scope)
    rows_read += (
        quiz.rows_read
        + interest.rows_read
        + lists.rows_read
        + rating.rows_read
        + exclusions.rows_read
        + behaviour_read
    )
    skipped = {
        "bad_vector_blob": quiz.bad_blobs + interest.bad_blobs + behaviour_bad,
        **lists.skipped,
    }
    population = Population(
        **user_fields(users, now, params),
        quiz_vectors=quiz.vectors,
        has_quiz=quiz.present,
        interest_vectors=interest.vectors,
        has_interest=interest.present,
        interest_indptr=lists.indptr,
        interest_ids=lists.interest_ids,
        interest_weights=lists.weights,
        catalogue_interest_ids=lists.catalogue_ids,
        catalogue_interest_names=lists.catalogue_names,
        rating_quality=rating.quality,
        has_rating_quality=rating.has_quality,
        rating_dims=rating.centred,
        rating_preferences=rating.preferences,
        has_preference=rating.has_preference,
        excluded_indptr=exclusions.indptr,
        excluded_rows=exclusions.rows,
        **behaviour,
    )
    return Loaded(population=population, skipped=skipped, rows_read=rows_read, users=users)


def _active_users(
    conn: sa.Connection, scope: npt.NDArray[np.int64] | None
) -> tuple[pd.DataFrame, int]:
    """The active users' rows (of ``scope``), sorted by id, and the rows read."""
    users = signal_store.read(
        conn,
        schema.users,
        "id",
        scope,
        columns=("id", *FILTER_COLUMNS, "created_at", "last_active_at"),
    )
    rows_read = len(users)
    users = users[users["is_active"].fillna(False).astype(bool)]
    return users.sort_values("id", kind="stable").reset_index(drop=True), rows_read


def user_fields(users: pd.DataFrame, now: dt.datetime, params: LoadParams) -> dict[str, Any]:
    """The :class:`Population` fields read from ``users`` (filters, ages, activity) at
    ``now``: the rows of :attr:`Loaded.users`, in their order."""
    n = len(users)
    max_distance = _float_column(users, "max_distance_km")
    max_distance = np.where(np.isnan(max_distance), params.default_max_distance_km, max_distance)
    # Beyond float32's range a limit saturates to ±inf, which keeps its meaning: +inf is no
    # limit, -inf stays negative for the validator. The cast alone would warn and do the same.
    too_far = np.abs(max_distance) > np.finfo(np.float32).max
    max_distance = np.where(too_far, np.copysign(np.inf, max_distance), max_distance)
    # Saturated, not masked or wrapped: a stored 9 or 256 must stay invalid for the validator.
    seeking = np.clip(_int_column(users, "seeking_mask", 0), -1, 127)
    return {
        "user_ids": users["id"].to_numpy(dtype=np.int64),
        "gender": np.clip(_int_column(users, "gender", -1), -1, 127).astype(np.int8),
        "seeking_mask": seeking.astype(np.int8),
        "age": _ages(now, users["birth_date"]),
        "age_min": _int_column(users, "age_min", 18).astype(np.int16),
        "age_max": _int_column(users, "age_max", 99).astype(np.int16),
        "max_distance_km": max_distance.astype(np.float32),
        "lat": _float_column(users, "latitude"),
        "lon": _float_column(users, "longitude"),
        "active": np.ones(n, dtype=np.bool_),
        "account_age_days": _days_between(now, users["created_at"]),
        "inactive_days": _days_between(now, users["last_active_at"]),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class _InterestLists:
    """Each user's usable interest-index entries (CSR) and the catalogue."""

    indptr: npt.NDArray[np.int64]
    interest_ids: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]
    catalogue_ids: npt.NDArray[np.int64]
    catalogue_names: npt.NDArray[np.object_]
    skipped: dict[str, int]
    rows_read: int


def _interest_lists(
    conn: sa.Connection, user_ids: npt.NDArray[np.int64], scope: npt.NDArray[np.int64] | None
) -> _InterestLists:
    """The interest index of ``user_ids``; entries naming an unknown interest or carrying a
    negative or non-finite weight are dropped and counted."""
    catalogue = signal_store.read(conn, schema.interests, columns=("id", "name"))
    catalogue = catalogue.sort_values("id", kind="stable")
    catalogue_ids = catalogue["id"].to_numpy(dtype=np.int64)
    index = signal_store.read(
        conn,
        schema.user_interest_index,
        "user_id",
        scope,
        columns=("user_id", "interest_id", "weight"),
    )
    owner, owned = _rows_of(user_ids, index["user_id"].to_numpy(dtype=np.int64))
    interest_ids = index["interest_id"].to_numpy(dtype=np.int64)
    _, known = _rows_of(catalogue_ids, interest_ids)
    weights = index["weight"].to_numpy(dtype=np.float64)
    usable_weight = np.isfinite(weights) & (weights >= 0)
    keep = owned & known & usable_weight
    indptr, (kept_ids, kept_weights) = _csr(
        user_ids.size, owner[keep], interest_ids[keep], weights[keep].astype(np.float32)
    )
    return _InterestLists(
        indptr=indptr,
        interest_ids=kept_ids,
        weights=kept_weights,
        catalogue_ids=catalogue_ids,
        catalogue_names=catalogue["name"].astype(object).to_numpy(dtype=object),
        skipped={
            "unknown_interest": int((owned & ~known).sum()),
            "bad_interest_weight": int((owned & known & ~usable_weight).sum()),
        },
        rows_read=len(catalogue) + len(index),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class _Exclusions:
    """Per user (CSR), the rows of the users a like, pass or block keeps apart from them."""

    indptr: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]
    rows_read: int


def _exclusions(
    conn: sa.Connection, user_ids: npt.NDArray[np.int64], scope: npt.NDArray[np.int64] | None
) -> _Exclusions:
    n = user_ids.size
    # an exclusion needs both ends loaded, so filtering on one end is enough
    likes = signal_store.read(
        conn, schema.likes, "user_id", scope, columns=("user_id", "target_id")
    )
    liker, liker_ok = _rows_of(user_ids, likes["user_id"].to_numpy(dtype=np.int64))
    target, target_ok = _rows_of(user_ids, likes["target_id"].to_numpy(dtype=np.int64))
    both = liker_ok & target_ok
    # Store each exclusion under both users: the filter checks both directions anyway, and a
    # per-user count of exclusions is what candidate search adds to its fetch size.
    owners = np.concatenate([liker[both], target[both]])
    others = np.concatenate([target[both], liker[both]])
    pair_keys = np.unique(owners * max(n, 1) + others)
    indptr, (rows,) = _csr(n, pair_keys // max(n, 1), (pair_keys % max(n, 1)).astype(np.int64))
    return _Exclusions(indptr=indptr, rows=rows, rows_read=len(likes))


@dataclasses.dataclass(frozen=True, eq=False)
class _RatingSignals:
    """The ratings job's output aligned with the loaded users (zeros where absent)."""

    quality: npt.NDArray[np.float32]
    has_quality: npt.NDArray[np.bool_]
    centred: npt.NDArray[np.float32]
    preferences: npt.NDArray[np.float32]
    has_preference: npt.NDArray[np.bool_]
    rows_read: int


def _rating_signals(
    conn: sa.Connection,
    user_ids: npt.NDArray[np.int64],
    scope: npt.NDArray[np.int64] | None,
    dimension_weights: dict[str, float],
) -> _RatingSignals:
    """Quality, centred standing and preferences as the ratings job wrote them.

    Read from ``profile_rating_standing`` and ``user_rating_preferences`` only: the match job
    never regroups the raw ratings. Rows written for another number of dimensions than the
    catalogue has now cannot be compared, and count as absent; so does everything before the
    ratings job's first run (the rating signals are then neutral). With
    ``dimension_weights`` (``ratings.dimension_weights``), the quality is reweighted from the
    stored one (:func:`compute.ratings.reweighted_quality`); a weight naming no dimension of
    the catalogue is a ``ConfigError``, raised before anything is written.
    """
    n = user_ids.size
    dimensions = signal_store.read(conn, schema.rating_dimensions, columns=("id", "name"))
    dimensions = dimensions.sort_values("id", kind="stable")  # the centred columns' order
    n_dims = len(dimensions)
    try:
        names = [str(name) for name in dimensions["name"]]
        to_weights = ratings.dimension_weights(names, dimension_weights)
    except ValueError as exc:
        raise ConfigError(f"ratings.{exc}") from None
    standing = _vectors(
        conn,
        schema.profile_rating_standing,
        user_ids,
        scope,
        key="profile_id",
        blob="centred",
        scalars=("quality",),
    )
    preferences = _vectors(conn, schema.user_rating_preferences, user_ids, scope)
    absent = (np.zeros((n, n_dims), dtype=np.float32), np.zeros(n, dtype=np.bool_))
    centred, has_quality = (
        (standing.vectors, standing.present) if standing.vectors.shape[1] == n_dims else absent
    )
    vectors, has_preference = (
        (preferences.vectors, preferences.present)
        if preferences.vectors.shape[1] == n_dims
        else absent
    )
    quality = np.where(has_quality, standing.columns["quality"], 0.0)
    if dimension_weights and n_dims:
        alike = ratings.dimension_weights(names, {})
        weighted = ratings.reweighted_quality(quality, centred, alike, to_weights)
        quality = np.where(has_quality, weighted, 0.0)
    return _RatingSignals(
        quality=quality.astype(np.float32),
        has_quality=has_quality,
        centred=centred,
        preferences=vectors,
        has_preference=has_preference,
        rows_read=n_dims + standing.rows_read + preferences.rows_read,
    )


def exclusion_pairs(conn: sa.Connection, user_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """(k, 2) int64 ``(user_id, target_id)``: every like, pass or block given or received by
    one of ``user_ids`` (both directions: a whole load keeps a pair apart either way)."""
    columns = ("user_id", "target_id")
    given = signal_store.read(conn, schema.likes, "user_id", user_ids, columns=columns)
    received = signal_store.read(conn, schema.likes, "target_id", user_ids, columns=columns)
    pairs = np.concatenate(
        [given[list(columns)].to_numpy(np.int64), received[list(columns)].to_numpy(np.int64)]
    ).reshape(-1, 2)
    return np.unique(pairs, axis=0) if pairs.size else pairs


def active_ids_above(conn: sa.Connection, user_id: int) -> npt.NDArray[np.int64]:
    """Sorted ids of active users with an id above ``user_id`` (joined since a read)."""
    users = schema.users
    query = sa.select(users.c.id).where(users.c.id > int(user_id), users.c.is_active)
    frame = bulk.read_frame(conn, query, what="read new active users")
    return np.sort(frame["id"].to_numpy(dtype=np.int64))


def subset_snapshot(snapshot: FilterSnapshot, user_ids: npt.NDArray[np.int64]) -> FilterSnapshot:
    """The part of ``snapshot`` about ``user_ids`` (those it holds)."""
    rows, found = _rows_of(snapshot.user_ids, np.unique(np.asarray(user_ids, dtype=np.int64)))
    rows = rows[found]
    return FilterSnapshot(user_ids=snapshot.user_ids[rows], digests=snapshot.digests[rows])


def merge_snapshots(
    held: FilterSnapshot, fresh: FilterSnapshot, read_ids: npt.NDArray[np.int64]
) -> FilterSnapshot:
    """``held`` with the digests of ``read_ids`` replaced by ``fresh``'s (a read id absent
    from ``fresh`` no longer exists and leaves)."""
    _, was_read = _rows_of(np.unique(np.asarray(read_ids, dtype=np.int64)), held.user_ids)
    ids = np.concatenate([held.user_ids[~was_read], fresh.user_ids])
    digests = np.concatenate([held.digests[~was_read], fresh.digests])
    order = np.argsort(ids, kind="stable")
    return FilterSnapshot(user_ids=ids[order], digests=digests[order])


def candidate_region(
    conn: sa.Connection,
    target_ids: npt.NDArray[np.int64],
    default_max_distance_km: float,
    margin_deg: float = 0.0,
) -> npt.NDArray[np.int64]:
    """The targets plus every active user who could pass a target's gender and distance filters.

    A superset of each target's eligible candidates (age, exclusions and the exact distance
    are left to the match job's filters): users of a gender the target seeks who seek the
    target's gender, inside a latitude/longitude box of the target's distance limit widened
    by ``margin_deg`` (the match job passes its geo cell size, so every member of every cell
    the target searches is inside), or with no location (distance is neutral for them). A
    target without a location gets every gender-compatible user. Boxes do not wrap around
    the antimeridian.
    """
    users = schema.users
    targets = signal_store.read(
        conn,
        users,
        "id",
        target_ids,
        columns=("id", "gender", "seeking_mask", "max_distance_km", "latitude", "longitude"),
    )
    clauses = []
    for t in targets.itertuples(index=False):
        if pd.isna(t.gender):
            continue
        seeks = [g for g in range(3) if int(t.seeking_mask) >> g & 1]
        clause = sa.and_(
            users.c.gender.in_(seeks),
            # the candidate seeks the target's gender
            users.c.seeking_mask.bitwise_and(1 << int(t.gender)) != 0,
        )
        limit = default_max_distance_km if pd.isna(t.max_distance_km) else t.max_distance_km
        # No box around a non-finite point or limit (an inf would reach the SQL as a bare
        # word): the target is then searched like one without a location, a superset.
        if np.isfinite([t.latitude, t.longitude, limit]).all():
            dlat = float(limit) / 110.574 + 0.01
            coslat = max(np.cos(np.radians(min(abs(float(t.latitude)) + dlat, 89.9))), 1e-3)
            dlon = float(limit) / (111.320 * coslat) + 0.01 + margin_deg
            dlat += margin_deg
            clause = sa.and_(
                clause,
                sa.or_(
                    users.c.latitude.is_(None),
                    users.c.longitude.is_(None),
                    sa.and_(
                        users.c.latitude.between(t.latitude - dlat, t.latitude + dlat),
                        users.c.longitude.between(t.longitude - dlon, t.longitude + dlon),
                    ),
                ),
            )
        clauses.append(clause)
    found = [targets["id"].to_numpy(dtype=np.int64)]
    if clauses:
        query = sa.select(users.c.id).where(users.c.is_active, sa.or_(*clauses))
        found.append(
            bulk.read_frame(conn, query, what="read candidate region")["id"].to_numpy(np.int64)
        )
    return np.unique(np.concatenate(found))
