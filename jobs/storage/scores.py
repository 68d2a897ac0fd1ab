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
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobs.errors import StorageError
from jobs.storage import bulk, publish_guard, schema
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
    # The users' rows are now exactly the frame's, so only its users and candidates can hold
    # a row a filter change forbids: comparing their digests is enough (the event path's
    # guard covers a whole region, tens of thousands of users at 100k, otherwise).
    published = np.union1d(ids, np.union1d(framed, frame["candidate_id"].to_numpy(np.int64)))
    purged = publish_guard.purge_forbidden(
        conn, TABLE.name, version, guard, user_ids=ids, published_ids=published
    )
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
    """``{user: (rows, lowest score)}`` of the ``version`` lists of ``user_ids`` that exist.

    PostgreSQL: one index lookup per user (a lateral join). Given thousands of users — every
    user a profile change makes newly eligible — the planner chose a parallel scan of the
    whole partition for the grouped IN query: 1.4 s at 100k users for 4,000 of them, 0.2 s
    this way.
    """
    ids = [int(u) for u in np.unique(np.asarray(user_ids, dtype=np.int64))]
    if not ids:
        return {}
    if is_postgres(conn):
        sql = (
            "SELECT u.id AS user_id, f.n, f.low FROM unnest(CAST(:ids AS BIGINT[])) AS u(id) "
            "CROSS JOIN LATERAL (SELECT count(*) AS n, min(m.score) AS low FROM match_scores "
            "AS m WHERE m.algorithm_version = :v AND m.user_id = u.id) AS f WHERE f.n > 0"
        )
        with translate_errors("read list floors in match_scores"):
            rows = conn.execute(sa.text(sql), {"v": version, "ids": ids}).all()
        return {int(u): (int(n), float(low)) for u, n, low in rows}
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
            f"{bulk.ids_clause(conn, 'candidate_id', 'c')} AND "
            f"{bulk.ids_clause(conn, 'user_id', 'u')}"
        )
        rows = conn.execute(
            sa.text(sql),
            {
                "v": version,
                "c": bulk.ids_param(conn, np.asarray(cands)),
                "u": bulk.ids_param(conn, users),
            },
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
