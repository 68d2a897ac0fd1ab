"""The nightly swap (PostgreSQL): a version's whole output staged, indexed and swapped in.

The nightly writes a version's whole output into a fresh stage table without indexes
(COPY at full speed, one transaction per shard), indexes it once, then swaps it in as the
version's partition of match_scores in one short transaction. Readers see the old set or
the new one for every user at once; nothing is deleted row by row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from jobs.errors import StorageError
from jobs.storage import ledger, publish_guard, schema, scores
from jobs.storage import population as population_store
from jobs.storage.engine import is_postgres, translate_errors


def stage_name(run_id: int) -> str:
    return f"{schema.PARTITION_PREFIX}stage_{int(run_id)}"


def staged_rows(conn: sa.Connection) -> int:
    """Rows inserted into the stage tables there are (a nightly's progress while it writes),
    from the statistics collector: approximate, and a moment late."""
    with translate_errors("count of staged rows"):
        return int(
            conn.execute(
                sa.text(
                    "SELECT COALESCE(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
                    "WHERE relname LIKE :p"
                ),
                {"p": f"{schema.PARTITION_PREFIX}stage_%"},
            ).scalar_one()
        )


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
        inserted = scores.insert_rows(
            conn, frame, version=version, computed_at=computed_at, table=stage
        )
    return deleted, inserted


def swap_in_stage(
    conn: sa.Connection,
    stage: str,
    version: str,
    snapshot: population_store.FilterSnapshot,
    published_ids: npt.NDArray[np.int64],
    *,
    run_id: int | None = None,
) -> publish_guard.Purged:
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
        # One after the other: each build already runs on parallel workers, and builds at
        # once on two cores took 35 % longer.
        conn.exec_driver_sql(
            f'ALTER TABLE "{stage}" ADD PRIMARY KEY (user_id, candidate_id, algorithm_version)'
        )
        conn.exec_driver_sql(f'CREATE INDEX ON "{stage}" (candidate_id)')
        conn.exec_driver_sql(f'ANALYZE "{stage}"')
    if run_id is not None:
        ledger.fence(conn, run_id)
    purged = publish_guard.purge_forbidden(
        conn, stage, version, snapshot, published_ids=published_ids
    )
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
            sa.update(scores.VERSIONS)
            .where(scores.VERSIONS.c.algorithm_version == version)
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
                sa.select(scores.VERSIONS.c.algorithm_version)
                .where(scores.VERSIONS.c.swapped_at.is_not(None))
                .order_by((scores.VERSIONS.c.algorithm_version == current).desc())
                .order_by(scores.VERSIONS.c.swapped_at.desc(), scores.VERSIONS.c.algorithm_version)
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
                sa.update(scores.VERSIONS)
                .where(scores.VERSIONS.c.algorithm_version.in_(retired))
                .values(swapped_at=None)
            )
    return retired


def drop_stage(conn: sa.Connection, stage: str) -> None:
    with translate_errors(f"drop stage table {stage}"):
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{stage}"')


def _literal(version: str) -> str:
    """``version`` as an SQL string literal (DDL takes no bind parameters)."""
    return "'" + version.replace("'", "''") + "'"
