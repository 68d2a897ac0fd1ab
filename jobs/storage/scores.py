"""All SQL on ``match_scores``: per-user-set replacement, reverse lookups, reads.

A user's list for one ``algorithm_version`` is replaced in the caller's transaction: delete
that version's rows of the given users, then insert the new rows. Committed together, a
reader running the API query sees the old set or the new one, never half of either; other
versions are untouched; a user given no rows loses theirs.

A row stores its reasons as ``reason_id``, the 64-bit digest of their JSON text, whose text
is kept once in ``reason_patterns`` (:func:`store_patterns`, in the writing transaction);
reads join it back, so callers still see a ``reasons`` text column. Score and subscores are
``real``: the scorer computes float32, and reads cast them to float8 on PostgreSQL, so both
engines return the same float64 as before (SQLite gets the values rounded to float32).

PostgreSQL inserts with a binary ``COPY`` whose rows are packed with numpy: every field of a
row is fixed-width now (the version is one text per run), so a chunk is one structured
array's bytes. The generic CSV path of :mod:`jobs.storage.bulk` formats each float with
``repr`` in Python and cannot keep up with the tens of millions of rows of a nightly. SQLite
uses ``executemany``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import shutil
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobs.errors import StorageError
from jobs.storage import bulk, ledger, schema
from jobs.storage import population as population_store
from jobs.storage.engine import is_postgres, translate_errors

TABLE = schema.match_scores
PATTERNS = schema.reason_patterns
SUBSCORE_COLUMNS: tuple[str, ...] = tuple(f"s_{name}" for name in schema.SUBSCORE_COLUMNS)
# Columns of the frames this module writes and reads (version and time are per call).
FRAME_COLUMNS: tuple[str, ...] = ("user_id", "candidate_id", "score", *SUBSCORE_COLUMNS, "reasons")
# COPY order: the table's column order (migration 0014).
COPY_COLUMNS: tuple[str, ...] = (
    "user_id",
    "candidate_id",
    "reason_id",
    "computed_at",
    "score",
    *SUBSCORE_COLUMNS,
    "algorithm_version",
)
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_SQLITE_CHUNK = 900
COPY_CHUNK_ROWS = 200_000


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"match score frame must have columns {FRAME_COLUMNS}; missing {missing}")
    if frame["reasons"].isna().any():
        raise ValueError("match score frame holds missing reasons")
    numbers = frame[["score", *SUBSCORE_COLUMNS]].to_numpy(dtype=np.float64)
    if numbers.size and not np.isfinite(numbers).all():
        # A broken invariant of the scorer, not bad input: refuse before writing anything.
        raise ValueError("match score frame holds NaN or infinite scores")


def _micros_since_2000(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"computed_at must be timezone-aware UTC; got {when!r}")
    delta = when.astimezone(dt.UTC) - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def reason_id(text: str) -> int:
    """The id of a reasons text in ``reason_patterns``: its 64-bit BLAKE2b digest (signed).

    Content-addressed, so parallel writers agree on ids without asking the database; a
    collision (≈ n² / 2⁶⁵ for n patterns) is detected by :func:`store_patterns`.
    """
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


@dataclasses.dataclass(frozen=True)
class ReasonPatterns:
    """The distinct reasons texts of a frame, their ids, and each row's id."""

    ids: npt.NDArray[np.int64]  # (p,) id of each distinct text
    texts: list[str]  # (p,)
    row_ids: npt.NDArray[np.int64]  # (m,) the id of each row's text


def reason_patterns(texts: pd.Series) -> ReasonPatterns:
    """Factorize ``texts`` (a frame's ``reasons``) and digest each distinct text once."""
    codes, uniques = pd.factorize(texts, sort=False)
    distinct = [str(t) for t in uniques]
    ids = np.fromiter(map(reason_id, distinct), dtype=np.int64, count=len(distinct))
    return ReasonPatterns(ids, distinct, ids[codes] if len(codes) else np.empty(0, np.int64))


def encode_copy_binary(
    frame: pd.DataFrame,
    row_reason_ids: npt.NDArray[np.int64],
    version: str,
    computed_at: dt.datetime,
) -> bytes:
    """Rows of ``frame`` in PostgreSQL's binary COPY format, columns :data:`COPY_COLUMNS`.

    ``row_reason_ids`` (m,) int64: each row's ``reason_id`` (:func:`reason_patterns`).
    """
    m = len(frame)
    if row_reason_ids.shape != (m,):
        raise ValueError(f"row_reason_ids must be ({m},); got {row_reason_ids.shape}")
    version_b = version.encode()
    fields: list[tuple[str, str]] = [("n_fields", ">i2")]
    for name in ("user", "cand", "reason", "time"):
        fields += [(f"{name}_len", ">i4"), (name, ">i8")]
    for i in range(1 + len(SUBSCORE_COLUMNS)):
        fields += [(f"f{i}_len", ">i4"), (f"f{i}", ">f4")]
    fields += [("version_len", ">i4"), ("version", f"S{len(version_b)}")]
    rows = np.empty(m, dtype=np.dtype(fields))
    rows["n_fields"] = len(COPY_COLUMNS)
    for name in ("user", "cand", "reason", "time"):
        rows[f"{name}_len"] = 8
    rows["user"] = frame["user_id"].to_numpy(dtype=np.int64)
    rows["cand"] = frame["candidate_id"].to_numpy(dtype=np.int64)
    rows["reason"] = row_reason_ids
    rows["time"] = _micros_since_2000(computed_at)
    for i, name in enumerate(("score", *SUBSCORE_COLUMNS)):
        rows[f"f{i}_len"] = 4
        # The scorer's values are float32 (widened to float64 in the frame): exact.
        rows[f"f{i}"] = frame[name].to_numpy(dtype=np.float64)
    rows["version_len"] = len(version_b)
    rows["version"] = version_b
    return rows.tobytes()


def encode_chunks(
    frame: pd.DataFrame,
    version: str,
    computed_at: dt.datetime,
    row_reason_ids: npt.NDArray[np.int64] | None = None,
) -> Iterator[bytes]:
    """:func:`encode_copy_binary` of ``frame`` in chunks of :data:`COPY_CHUNK_ROWS` rows.

    ``row_reason_ids`` default: digested from ``frame["reasons"]``.
    """
    if row_reason_ids is None:
        row_reason_ids = reason_patterns(frame["reasons"]).row_ids
    for start in range(0, len(frame), COPY_CHUNK_ROWS):
        chunk = frame.iloc[start : start + COPY_CHUNK_ROWS]
        ids = row_reason_ids[start : start + COPY_CHUNK_ROWS]
        yield encode_copy_binary(chunk, ids, version, computed_at)


_NEW_PATTERNS = "reason_patterns_new"


def store_patterns(conn: sa.Connection, patterns: ReasonPatterns) -> int:
    """Add ``patterns`` missing from ``reason_patterns``; the number of distinct patterns.

    Run it in the transaction that writes the rows holding them, after those rows: a new
    pattern's key is then held only until that commit, so two actors writing the same new
    pattern wait for each other briefly, not for a whole shard. Ids in sorted order, so two
    writers never wait for each other in a cycle. A stored text that differs from ours
    under the same id (a digest collision) is a ``StorageError``: nothing is written.
    """
    if not patterns.texts:
        return 0
    order = np.argsort(patterns.ids, kind="stable")
    ids = [int(patterns.ids[i]) for i in order]
    texts = [patterns.texts[i] for i in order]
    with translate_errors("store reason patterns"):
        if is_postgres(conn):
            # COPY, not array parameters: sending 64k texts (one shard's patterns at 20k
            # users) as a text[] parameter took 7 s; COPY takes ~0.3 s.
            conn.exec_driver_sql(
                f'CREATE TEMPORARY TABLE IF NOT EXISTS "{_NEW_PATTERNS}" '
                "(id BIGINT NOT NULL, reasons TEXT NOT NULL) ON COMMIT DELETE ROWS"
            )
            conn.exec_driver_sql(f'TRUNCATE "{_NEW_PATTERNS}"')
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f'COPY "{_NEW_PATTERNS}" (id, reasons) FROM STDIN') as copy:
                for row in zip(ids, texts, strict=True):
                    copy.write_row(row)
            # LATERAL … LIMIT 1: one key lookup per pattern of ours. A plain join hashed the
            # whole dictionary on every write (1.1 s at 250k patterns, growing with it).
            clashes = conn.execute(
                sa.text(
                    f'SELECT n.id FROM "{_NEW_PATTERNS}" n CROSS JOIN LATERAL '
                    "(SELECT p.reasons FROM reason_patterns p WHERE p.id = n.id LIMIT 1) AS p "
                    "WHERE p.reasons <> n.reasons"
                )
            ).scalars()
            clashing = list(clashes)
            if not clashing:
                conn.exec_driver_sql(
                    "INSERT INTO reason_patterns (id, reasons) SELECT id, reasons "
                    f'FROM "{_NEW_PATTERNS}" ORDER BY id ON CONFLICT (id) DO NOTHING'
                )
        else:
            conn.execute(
                sqlite.insert(PATTERNS).on_conflict_do_nothing(),
                [{"id": i, "reasons": t} for i, t in zip(ids, texts, strict=True)],
            )
            stored: dict[int, str] = {}
            for start in range(0, len(ids), _SQLITE_CHUNK):
                chunk = ids[start : start + _SQLITE_CHUNK]
                query = sa.select(PATTERNS.c.id, PATTERNS.c.reasons).where(PATTERNS.c.id.in_(chunk))
                stored.update((int(i), str(t)) for i, t in conn.execute(query))
            clashing = [i for i, t in zip(ids, texts, strict=True) if stored.get(i) != t]
    if clashing:
        raise StorageError(
            f"reason_patterns: {len(clashing)} reasons texts share a 64-bit id with another "
            f"text (e.g. id {clashing[0]}); nothing was written"
        )
    return len(ids)


def copy_encoded(conn: sa.Connection, table: str, payloads: Iterable[bytes]) -> None:
    """One binary COPY into ``table`` of rows encoded by :func:`encode_copy_binary`."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    columns = ", ".join(COPY_COLUMNS)
    with cursor.copy(f'COPY "{table}" ({columns}) FROM STDIN (FORMAT binary)') as copy:
        copy.write(_COPY_HEADER)
        for payload in payloads:
            copy.write(payload)
        copy.write(_COPY_TRAILER)


def _delete_users(conn: sa.Connection, version: str, user_ids: npt.NDArray[np.int64]) -> int:
    if user_ids.size == 0:
        return 0
    if is_postgres(conn):
        result = conn.execute(
            sa.text(
                "DELETE FROM match_scores WHERE algorithm_version = :v "
                "AND user_id = ANY(CAST(:ids AS BIGINT[]))"
            ),
            {"v": version, "ids": [int(u) for u in user_ids]},
        )
        return int(result.rowcount or 0)
    deleted = 0
    for start in range(0, user_ids.size, _SQLITE_CHUNK):
        chunk = [int(u) for u in user_ids[start : start + _SQLITE_CHUNK]]
        result = conn.execute(
            sa.delete(TABLE).where(TABLE.c.algorithm_version == version, TABLE.c.user_id.in_(chunk))
        )
        deleted += int(result.rowcount or 0)
    return deleted


def insert_rows(
    conn: sa.Connection,
    frame: pd.DataFrame,
    *,
    version: str,
    computed_at: dt.datetime,
    table: str = TABLE.name,
) -> int:
    """Append ``frame``'s rows (columns :data:`FRAME_COLUMNS`) for ``version``; rows written.

    ``table`` is ``match_scores`` or a nightly stage table (:func:`create_stage`). The rows'
    reasons patterns are stored too (:func:`store_patterns`).
    """
    _check_frame(frame)
    if frame.empty:
        return 0
    patterns = reason_patterns(frame["reasons"])
    if is_postgres(conn):
        copy_encoded(conn, table, encode_chunks(frame, version, computed_at, patterns.row_ids))
    else:
        stamp = computed_at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
        numbers = ("score", *SUBSCORE_COLUMNS)
        names = ["algorithm_version", "user_id", "candidate_id", "reason_id", *numbers]
        names.append("computed_at")
        sql = f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})'
        columns = [frame[c].to_numpy().tolist() for c in ("user_id", "candidate_id")]
        columns.append(patterns.row_ids.tolist())
        # Rounded to float32 as PostgreSQL's float4 would: both engines read the same.
        columns += [
            frame[c].to_numpy(dtype=np.float32).astype(np.float64).tolist() for c in numbers
        ]
        rows = zip(itertools.repeat(version), *columns, itertools.repeat(stamp))
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        while batch := list(itertools.islice(rows, bulk.CHUNK_ROWS)):
            cursor.executemany(sql, batch)
    store_patterns(conn, patterns)
    return len(frame)


def replace_user_sets(
    conn: sa.Connection,
    user_ids: npt.ArrayLike,
    frame: pd.DataFrame,
    *,
    version: str,
    computed_at: dt.datetime,
    guard: population_store.FilterSnapshot,
) -> tuple[int, int]:
    """Replace the ``version`` rows of ``user_ids`` by ``frame``'s; ``(deleted, inserted)``.

    Run inside one transaction (the caller commits): a reader sees either set, never a mix.
    Every ``frame`` user must be among ``user_ids``. ``guard`` is the filter snapshot taken
    before the rows were computed: the rows an exclusion or a profile change recorded since
    forbids are purged in the same transaction (:func:`purge_forbidden`), so ``inserted``
    counts the rows left after that. On PostgreSQL the users' sets are locked first
    (advisory locks in id order), so two writers of one user queue instead of colliding.
    """
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    framed = frame["user_id"].to_numpy(dtype=np.int64)
    if framed.size and not np.isin(framed, ids).all():
        raise ValueError("frame holds rows of users outside user_ids")
    with translate_errors("replace match_scores"):
        _lock_user_sets(conn, version, ids)
        deleted = _delete_users(conn, version, ids)
        inserted = insert_rows(conn, frame, version=version, computed_at=computed_at)
    purged = purge_forbidden(conn, TABLE.name, version, guard, user_ids=ids)
    return deleted, inserted - purged.rows


def _lock_user_sets(conn: sa.Connection, version: str, user_ids: npt.NDArray[np.int64]) -> None:
    """PostgreSQL: take a transaction advisory lock per (version, user), in key order.

    Without it two workers replacing the same user both delete the old set and both insert
    the new one, and the second fails on the primary key. Keys are 64-bit digests; a
    collision only makes two unrelated writers wait for each other.
    """
    if not is_postgres(conn) or user_ids.size == 0:
        return
    keys = sorted(
        int.from_bytes(
            hashlib.blake2b(f"match_scores:{version}:{int(u)}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        for u in user_ids
    )
    conn.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT k FROM unnest(CAST(:keys AS BIGINT[])) AS k ORDER BY k) AS ordered"
        ),
        {"keys": keys},
    )


VERSIONS = schema.algorithm_versions


def stored_scoring_hash(conn: sa.Connection, version: str) -> str | None:
    """The scoring hash ``version``'s rows carry (``algorithm_versions``), or None if new."""
    query = sa.select(VERSIONS.c.scoring_hash).where(VERSIONS.c.algorithm_version == version)
    with translate_errors(f"read the scoring hash of version {version!r}"):
        return conn.execute(query).scalar_one_or_none()


def record_version(conn: sa.Connection, version: str, scoring_hash: str, now: dt.datetime) -> None:
    """Make ``scoring_hash`` the hash of ``version`` (insert, or replace the stored one)."""
    insert = postgresql.insert(VERSIONS) if is_postgres(conn) else sqlite.insert(VERSIONS)
    statement = insert.values(
        algorithm_version=version, scoring_hash=scoring_hash, first_written_at=now, hash_set_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[VERSIONS.c.algorithm_version],
        set_={"scoring_hash": scoring_hash, "hash_set_at": now},
        where=VERSIONS.c.scoring_hash != scoring_hash,
    )
    with translate_errors(f"record the scoring hash of version {version!r}"):
        conn.execute(statement)


def delete_users_except(conn: sa.Connection, version: str, keep_user_ids: npt.ArrayLike) -> int:
    """Delete ``version`` rows of every user not in ``keep_user_ids`` (left the population)."""
    keep = np.unique(np.asarray(keep_user_ids, dtype=np.int64))
    with translate_errors("delete stale match_scores"):
        stored = bulk.read_frame(
            conn,
            sa.select(TABLE.c.user_id).where(TABLE.c.algorithm_version == version).distinct(),
            what="read users with match_scores",
        )
        stale = np.setdiff1d(stored["user_id"].to_numpy(dtype=np.int64), keep)
        return _delete_users(conn, version, stale)


def users_listing(
    conn: sa.Connection,
    version: str,
    candidate_ids: npt.ArrayLike,
    *,
    exclude: npt.ArrayLike = (),
    limit: int,
) -> npt.NDArray[np.int64]:
    """Users whose ``version`` list holds one of ``candidate_ids`` (reverse fan-out).

    At most ``limit`` users, those who rank a candidate highest first (score desc, user id),
    skipping ``exclude``. Uses the reverse index (candidate_id) of the version's partition.
    """
    ids = [int(c) for c in np.unique(np.asarray(candidate_ids, dtype=np.int64))]
    excluded = np.asarray(exclude, dtype=np.int64)
    if not ids or limit <= 0:
        return np.empty(0, dtype=np.int64)
    best = sa.func.max(TABLE.c.score).label("best")
    query = (
        sa.select(TABLE.c.user_id, best)
        .where(TABLE.c.algorithm_version == version, TABLE.c.candidate_id.in_(ids))
        .group_by(TABLE.c.user_id)
        .order_by(best.desc(), TABLE.c.user_id)
        .limit(limit + excluded.size)
    )
    frame = bulk.read_frame(conn, query, what="reverse lookup in match_scores")
    users = frame["user_id"].to_numpy(dtype=np.int64)
    return users[~np.isin(users, excluded)][:limit]


def list_floors(
    conn: sa.Connection, version: str, user_ids: npt.ArrayLike
) -> dict[int, tuple[int, float]]:
    """``{user: (rows, lowest score)}`` of the ``version`` lists of ``user_ids`` that exist."""
    ids = [int(u) for u in np.unique(np.asarray(user_ids, dtype=np.int64))]
    if not ids:
        return {}
    query = (
        sa.select(
            TABLE.c.user_id, sa.func.count().label("n"), sa.func.min(TABLE.c.score).label("low")
        )
        .where(TABLE.c.algorithm_version == version, TABLE.c.user_id.in_(ids))
        .group_by(TABLE.c.user_id)
    )
    frame = bulk.read_frame(conn, query, what="read list floors in match_scores")
    return {
        int(u): (int(n), float(low))
        for u, n, low in zip(frame["user_id"], frame["n"], frame["low"], strict=True)
    }


def listed_pairs(
    conn: sa.Connection, version: str, user_ids: npt.ArrayLike, candidate_ids: npt.ArrayLike
) -> list[tuple[int, int]]:
    """The (user, candidate) pairs of ``version`` with the user among ``user_ids`` and the
    candidate among ``candidate_ids``."""
    users = np.unique(np.asarray(user_ids, dtype=np.int64))
    cands = [int(c) for c in np.unique(np.asarray(candidate_ids, dtype=np.int64))]
    if users.size == 0 or not cands:
        return []
    with translate_errors("read listed pairs in match_scores"):
        sql = (
            "SELECT user_id, candidate_id FROM match_scores WHERE algorithm_version = :v AND "
            f"{ids_clause(conn, 'candidate_id', 'c')} AND {ids_clause(conn, 'user_id', 'u')}"
        )
        rows = conn.execute(
            sa.text(sql),
            {"v": version, "c": ids_param(conn, np.asarray(cands)), "u": ids_param(conn, users)},
        ).all()
    return [(int(a), int(b)) for a, b in rows]


def candidate_counts(conn: sa.Connection, version: str) -> pd.DataFrame:
    """``candidate_id``, ``n``: in how many stored ``version`` lists each candidate appears."""
    query = (
        sa.select(TABLE.c.candidate_id, sa.func.count().label("n"))
        .where(TABLE.c.algorithm_version == version)
        .group_by(TABLE.c.candidate_id)
    )
    frame = bulk.read_frame(conn, query, what="count match_scores per candidate")
    frame["n"] = frame["n"].astype(np.int64)
    return frame


def read_rows(
    conn: sa.Connection, version: str, user_ids: npt.ArrayLike | None = None
) -> pd.DataFrame:
    """Stored rows of ``version`` (optionally of some users), sorted by user, score desc.

    Columns: ``algorithm_version``, :data:`FRAME_COLUMNS` (``reasons`` is the JSON text),
    ``computed_at``.
    """
    numbers = [sa.cast(TABLE.c[c], sa.Float).label(c) for c in ("score", *SUBSCORE_COLUMNS)]
    query: Any = (
        sa.select(
            TABLE.c.algorithm_version,
            TABLE.c.user_id,
            TABLE.c.candidate_id,
            *numbers,
            PATTERNS.c.reasons,
            TABLE.c.computed_at,
        )
        .join_from(TABLE, PATTERNS, PATTERNS.c.id == TABLE.c.reason_id)
        .where(TABLE.c.algorithm_version == version)
    )
    if user_ids is not None:
        query = query.where(TABLE.c.user_id.in_([int(u) for u in np.asarray(user_ids)]))
    frame = bulk.read_frame(conn, query, what="read match_scores")
    return frame.sort_values(
        ["user_id", "score", "candidate_id"], ascending=[True, False, True], kind="stable"
    ).reset_index(drop=True)


# ------------------------------------------------------------- the publish guard
#
# A set is computed from a snapshot of the source tables and published minutes later (a
# nightly) or milliseconds later (an event). Whatever the app recorded in between must hold
# after the publish: a like, pass or block between two users, a deactivation, a changed age
# range, gender sought, distance limit or location. So the publishing transaction ends by
# locking likes and users against writers (PostgreSQL: SHARE, taken NOWAIT and retried so
# that we never wait inside a lock cycle with the app; SQLite: the transaction already holds
# the database's write lock) and deleting every row those tables now forbid.

LOCK_BUDGET_S = 30.0
LOCK_FUNCTION = "matchjobs_lock_exclusion_sources"


def lock_exclusion_sources(conn: sa.Connection, budget_s: float = LOCK_BUDGET_S) -> float:
    """PostgreSQL: hold SHARE locks on likes and users until commit; seconds waited.

    While held, no like, pass, block or profile change can commit, and every one committed
    before is visible to the next statement. Taken NOWAIT inside a savepoint and retried
    with jittered backoff: this transaction never waits on the app's writers, so it can
    never be part of a deadlock that the server would break by aborting the app's side.
    """
    if not is_postgres(conn):
        return 0.0
    started = time.monotonic()
    pause = 0.005
    while True:
        try:
            with conn.begin_nested():
                # Migration 0005: a SECURITY DEFINER function, so a role that may only read
                # likes and users can still hold them (SHARE needs UPDATE rights).
                conn.exec_driver_sql(f"SELECT {LOCK_FUNCTION}()")
            return time.monotonic() - started
        except sa.exc.OperationalError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate != "55P03":  # lock_not_available
                raise StorageError(f"lock likes and users failed: {exc.orig}") from exc
            waited = time.monotonic() - started
            if waited >= budget_s:
                raise StorageError(
                    f"lock likes and users failed: the app's writers held them for "
                    f"{waited:.1f} s (budget {budget_s:.0f} s); nothing was published"
                ) from exc
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.5)


def ids_clause(conn: sa.Connection, column: str, name: str) -> str:
    if is_postgres(conn):
        return f"{column} = ANY(CAST(:{name} AS BIGINT[]))"
    return f"{column} IN (SELECT value FROM json_each(:{name}))"


def ids_param(conn: sa.Connection, ids: npt.NDArray[np.int64]) -> Any:
    values = [int(i) for i in ids]
    return values if is_postgres(conn) else json.dumps(values)


@dataclasses.dataclass(frozen=True)
class Purged:
    """What :func:`purge_forbidden` removed, and what holding the app's tables cost."""

    rows_excluded: int = 0
    rows_changed_user: int = 0
    users_changed: int = 0
    lock_wait_s: float = 0.0
    held_s: float = 0.0

    @property
    def rows(self) -> int:
        return self.rows_excluded + self.rows_changed_user

    def figures(self) -> dict[str, float]:
        return {
            "rows_excluded": self.rows_excluded,
            "rows_changed_user": self.rows_changed_user,
            "users_changed": self.users_changed,
            "lock_wait_s": round(self.lock_wait_s, 4),
            "held_s": round(self.held_s, 4),
        }


def purge_forbidden(
    conn: sa.Connection,
    table: str,
    version: str,
    snapshot: population_store.FilterSnapshot,
    *,
    user_ids: npt.NDArray[np.int64] | None = None,
    published_ids: npt.NDArray[np.int64] | None = None,
) -> Purged:
    """Delete the rows of ``table`` that exclusions and profile changes recorded up to now
    forbid.

    Call it as the last write of the publishing transaction. ``snapshot`` was taken before
    the rows were computed; a user in ``published_ids`` (default: the snapshot's) whose
    filter columns changed since, who left or who is missing from the snapshot loses every
    row on either side (their own list is rebuilt by the event path or the backfill).
    ``user_ids`` restricts the purge to those users' lists (the event path); ``None`` purges
    the whole table (a nightly stage). ``held_s`` is how long the app's writers to likes and
    users are held up from here to the end of this function (the commit adds a little).
    """
    if user_ids is not None and user_ids.size == 0:
        return Purged()
    with translate_errors(f"purge forbidden pairs from {table}"):
        lock_wait = lock_exclusion_sources(conn)
        held_from = time.monotonic()
        published = snapshot.user_ids if published_ids is None else published_ids
        changed = population_store.changed_since(conn, snapshot, published)
        scope = "t.algorithm_version = :v"
        params: dict[str, Any] = {"v": version}
        if user_ids is not None:
            scope += " AND " + ids_clause(conn, "t.user_id", "ids")
            params["ids"] = ids_param(conn, user_ids)
        excluded = 0
        for mine, theirs in (("user_id", "target_id"), ("target_id", "user_id")):
            if is_postgres(conn):
                # A join, so that the planner can drive it from likes into the primary key.
                sql = (
                    f'DELETE FROM "{table}" AS t USING likes AS l WHERE {scope} '
                    f"AND t.user_id = l.{mine} AND t.candidate_id = l.{theirs}"
                )
            else:
                sql = (
                    f'DELETE FROM "{table}" AS t WHERE {scope} AND EXISTS (SELECT 1 FROM likes '
                    f"AS l WHERE l.{mine} = t.user_id AND l.{theirs} = t.candidate_id)"
                )
            excluded += int(conn.execute(sa.text(sql), params).rowcount or 0)
        changed_rows = 0
        if changed.size:
            params["changed"] = ids_param(conn, changed)
            sql = (
                f'DELETE FROM "{table}" AS t WHERE {scope} AND ('
                f"{ids_clause(conn, 't.user_id', 'changed')} OR "
                f"{ids_clause(conn, 't.candidate_id', 'changed')})"
            )
            changed_rows = int(conn.execute(sa.text(sql), params).rowcount or 0)
    return Purged(
        rows_excluded=excluded,
        rows_changed_user=changed_rows,
        users_changed=int(changed.size),
        lock_wait_s=lock_wait,
        held_s=time.monotonic() - held_from,
    )


# ------------------------------------------------------------- nightly swap (PostgreSQL)
#
# The nightly writes a version's whole output into a fresh stage table without indexes
# (COPY at full speed, one transaction per shard), indexes it once, then swaps it in as the
# version's partition of match_scores in one short transaction. Readers see the old set or
# the new one for every user at once; nothing is deleted row by row.


def stage_name(run_id: int) -> str:
    return f"{schema.PARTITION_PREFIX}stage_{int(run_id)}"


def partition_name(version: str) -> str:
    """The version's partition: a digest keeps any version string a valid, short name."""
    digest = hashlib.sha1(version.encode()).hexdigest()[:12]
    return f"{schema.PARTITION_PREFIX}v_{digest}"


def supports_swap(conn: sa.Connection) -> bool:
    """True when match_scores is partitioned (PostgreSQL after migration 0003)."""
    if not is_postgres(conn):
        return False
    kind = conn.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = 'match_scores'::regclass")
    ).scalar_one()
    return bool(kind == "p")


def create_stage(conn: sa.Connection, stage: str, version: str) -> None:
    """An empty table shaped like match_scores (columns, defaults, checks), no indexes.

    It also checks that every row is of ``version``: ATTACH PARTITION then skips its scan
    for rows of other versions, and adding that check at swap time would scan 18M rows.

    Stages left by runs that died are dropped first: the ledger lets one nightly match run
    at a time, so no other run can be writing one.
    """
    with translate_errors(f"create stage table {stage}"):
        leftovers = conn.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE tablename LIKE :p"),
            {"p": f"{schema.PARTITION_PREFIX}stage_%"},
        ).scalars()
        for name in list(leftovers):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
        conn.exec_driver_sql(
            f'CREATE TABLE "{stage}" (LIKE match_scores INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        conn.exec_driver_sql(
            f'ALTER TABLE "{stage}" ADD CONSTRAINT "{stage}_version" '
            f"CHECK (algorithm_version = {_literal(version)})"
        )


def write_stage_shard(
    conn: sa.Connection,
    stage: str,
    user_ids: npt.ArrayLike,
    frame: pd.DataFrame,
    *,
    version: str,
    computed_at: dt.datetime,
    rewrite: bool,
) -> tuple[int, int]:
    """COPY one shard into the stage; ``(deleted, inserted)``.

    ``rewrite`` (a retried shard: its first attempt may have committed) first deletes the
    shard's users from the stage — a scan of the unindexed stage, paid only on retries.
    """
    ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    deleted = 0
    with translate_errors(f"write shard into {stage}"):
        if rewrite and ids.size:
            deleted = int(
                conn.execute(
                    sa.text(f'DELETE FROM "{stage}" WHERE user_id = ANY(CAST(:ids AS BIGINT[]))'),
                    {"ids": [int(u) for u in ids]},
                ).rowcount
                or 0
            )
        inserted = insert_rows(conn, frame, version=version, computed_at=computed_at, table=stage)
    return deleted, inserted


def swap_in_stage(
    conn: sa.Connection,
    stage: str,
    version: str,
    snapshot: population_store.FilterSnapshot,
    published_ids: npt.NDArray[np.int64],
    *,
    run_id: int | None = None,
) -> Purged:
    """Index the stage like match_scores and make it the version's partition, atomically.

    Run in one transaction: the version's rows go from the old set to the new one at commit.
    Between the index builds and the swap, :func:`purge_forbidden` removes from the stage
    every pair that a like, pass, block or profile change recorded since ``snapshot`` forbids
    (``published_ids``: the users the stage was computed for), and holds likes and users
    against writers until commit, so no such change can slip in before the swap commits.
    The brief ACCESS EXCLUSIVE lock of DETACH makes concurrent readers wait, not fail.
    Returns what the purge removed and how long it held the app's writers up. With
    ``run_id``, that run's ``job_runs`` row is checked (``ledger.fence``) after the index
    builds and held until commit: a run that lost its lease swaps nothing in.
    """
    part = partition_name(version)
    with translate_errors(f"swap {stage} in for version {version!r}"):
        # Built before any lock: the expensive part of the swap. The definitions are the
        # parent's (schema.match_scores), so ATTACH adopts these instead of building more.
        # One after the other: each build already runs on parallel workers, and three
        # builds at once on two cores took 35 % longer.
        conn.exec_driver_sql(
            f'ALTER TABLE "{stage}" ADD PRIMARY KEY (user_id, candidate_id, algorithm_version)'
        )
        conn.exec_driver_sql(f'CREATE INDEX ON "{stage}" (user_id, score DESC)')
        conn.exec_driver_sql(f'CREATE INDEX ON "{stage}" (candidate_id)')
        conn.exec_driver_sql(f'ANALYZE "{stage}"')
    if run_id is not None:
        ledger.fence(conn, run_id)
    purged = purge_forbidden(conn, stage, version, snapshot, published_ids=published_ids)
    with translate_errors(f"swap {stage} in for version {version!r}"):
        conn.exec_driver_sql("LOCK TABLE match_scores IN ACCESS EXCLUSIVE MODE")
        exists = conn.execute(
            sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": part}
        ).scalar_one()
        if exists:
            conn.exec_driver_sql(f'ALTER TABLE match_scores DETACH PARTITION "{part}"')
            conn.exec_driver_sql(f'DROP TABLE "{part}"')
        else:
            # Until its first swap a version's rows live in the default partition.
            conn.execute(
                sa.text("DELETE FROM match_scores_default WHERE algorithm_version = :v"),
                {"v": version},
            )
        conn.exec_driver_sql(
            f'ALTER TABLE match_scores ATTACH PARTITION "{stage}" '
            f"FOR VALUES IN ({_literal(version)})"
        )
        conn.exec_driver_sql(f'ALTER TABLE "{stage}" RENAME TO "{part}"')
        # The server's clock, not the run's (--as-of may pin that in the past): the order
        # of swaps is what storage.keep_versions keeps by.
        conn.execute(
            sa.update(VERSIONS)
            .where(VERSIONS.c.algorithm_version == version)
            .values(swapped_at=sa.func.clock_timestamp())
        )
    return purged


# Bytes per stored row, heap plus indexes, when a version has no partition yet to measure
# (BENCHMARKS.md, Storage: 172 at 20k users × top 200 after migration 0012).
DEFAULT_BYTES_PER_ROW = 200


def free_disk_bytes(conn: sa.Connection, path: str | None) -> tuple[int | None, str]:
    """Free bytes of the filesystem holding the database, and where that was measured.

    ``path``: that filesystem as this host sees it; None asks the server for its
    ``data_directory`` (superuser or pg_read_all_settings), usable when the server runs on
    this host. ``(None, why)`` when it cannot be measured.
    """
    if path is None:
        try:
            with conn.begin_nested():
                path = conn.execute(sa.text("SELECT current_setting('data_directory')")).scalar()
        except sa.exc.DBAPIError as exc:
            return None, f"the server's data_directory is not readable ({exc.orig})"
        if path is None or not os.path.isdir(path):
            return None, f"the data directory {path!r} is not on this host"
    elif not os.path.isdir(path):
        raise StorageError(f"storage.disk_path {path!r} is not a directory on this host")
    return shutil.disk_usage(path).free, path


def check_free_disk(
    conn: sa.Connection,
    version: str,
    *,
    expected_rows: int,
    factor: float,
    reserve_bytes: int,
    path: str | None,
) -> dict[str, Any]:
    """Refuse to stage ``version`` where its new partition would not fit on the disk.

    Needed: ``expected_rows`` × bytes per row (the version's current partition, heap plus
    indexes over its row estimate, else :data:`DEFAULT_BYTES_PER_ROW`) × ``factor`` +
    ``reserve_bytes``; the old partition stays until the swap, so the stage needs all of
    it. Raises ``StorageError`` naming both figures when the free space is short; returns
    the figures (``checked`` false, with the reason, when the free space is unknown).
    """
    with translate_errors(f"estimate the stage of version {version!r}"):
        measured = conn.execute(
            sa.text(
                "SELECT pg_total_relation_size(c.oid), c.reltuples FROM pg_class c "
                "WHERE c.oid = to_regclass(:p)"
            ),
            {"p": partition_name(version)},
        ).first()
    per_row = float(DEFAULT_BYTES_PER_ROW)
    if measured is not None and measured[1] is not None and measured[1] > 0:
        per_row = float(measured[0]) / float(measured[1])
    needed = int(expected_rows * per_row * factor) + int(reserve_bytes)
    free, where = free_disk_bytes(conn, path)
    figures: dict[str, Any] = {
        "needed_bytes": needed,
        "bytes_per_row": round(per_row, 1),
        "expected_rows": int(expected_rows),
        "checked": free is not None,
    }
    if free is None:
        return {**figures, "reason": where}
    if free < needed:
        raise StorageError(
            f"not enough free disk to stage version {version!r}: needs {needed:,} bytes "
            f"({expected_rows:,} rows × {per_row:.0f} B × {factor:g} + {reserve_bytes:,} "
            f"reserve), {free:,} free on {where}; nothing was staged. Free space, drop "
            "retired versions (storage.keep_versions) or lower the estimate "
            "(storage.disk_estimate_factor)"
        )
    return {**figures, "free_bytes": free, "path": where}


def drop_retired_versions(conn: sa.Connection, keep: int, current: str) -> list[str]:
    """Drop the partitions of versions not among the ``keep`` most recently swapped.

    Run in the swap's transaction, after it (the table is already locked). ``current``
    (just swapped) is always kept. Only swapped versions' own partitions are dropped: the
    default partition, which holds the rows of versions never swapped, is left alone. The
    retired versions keep their ``algorithm_versions`` row (their hash), unswapped.
    """
    if keep < 1:
        raise ValueError(f"keep must be ≥ 1; got {keep}")
    with translate_errors("drop retired versions"):
        swapped = (
            conn.execute(
                sa.select(VERSIONS.c.algorithm_version)
                .where(VERSIONS.c.swapped_at.is_not(None))
                .order_by((VERSIONS.c.algorithm_version == current).desc())
                .order_by(VERSIONS.c.swapped_at.desc(), VERSIONS.c.algorithm_version)
            )
            .scalars()
            .all()
        )
        retired = [v for v in swapped[keep:] if v != current]
        for version in retired:
            part = partition_name(version)
            attached = conn.execute(
                sa.text(
                    "SELECT 1 FROM pg_inherits WHERE inhparent = 'match_scores'::regclass "
                    "AND inhrelid = to_regclass(:p)"
                ),
                {"p": part},
            ).first()
            if attached:
                conn.exec_driver_sql(f'ALTER TABLE match_scores DETACH PARTITION "{part}"')
                conn.exec_driver_sql(f'DROP TABLE "{part}"')
        if retired:
            conn.execute(
                sa.update(VERSIONS)
                .where(VERSIONS.c.algorithm_version.in_(retired))
                .values(swapped_at=None)
            )
    return retired


def drop_stage(conn: sa.Connection, stage: str) -> None:
    with translate_errors(f"drop stage table {stage}"):
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{stage}"')


def _literal(version: str) -> str:
    """``version`` as an SQL string literal (DDL takes no bind parameters)."""
    return "'" + version.replace("'", "''") + "'"
