"""PostgreSQL nightly: a version's rows are staged, indexed and swapped in as its partition."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.errors import StorageError
from jobs.storage import schema, scores, swap
from jobs.tools import seed

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def config_for(version: str) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    data.update(algorithm_version=version)
    data["ray"]["enabled"] = False
    data["ray"]["shard_size"] = 60
    data["audit"]["sample_users"] = 10
    return config_mod.from_mapping(data)


def run(db: Any, job: str, config: config_mod.Config) -> Any:
    return runner.execute(
        job,
        runner.job_function(job),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: NOW,
    )


def partitions(db: Any) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'match_scores'::regclass"
                )
            ).scalars()
        )


def rows(db: Any, version: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT user_id, candidate_id, score, p.reasons FROM match_scores m "
                    "JOIN reason_patterns p ON p.id = m.reason_id "
                    "WHERE algorithm_version = :v ORDER BY user_id, candidate_id"
                ),
                {"v": version},
            )
        ]


def insert_stray_row(conn: sa.Connection, version: str) -> None:
    """One row of ``version`` for user 999999 written outside any nightly (by column name)."""
    conn.execute(
        sa.insert(schema.match_scores).values(
            algorithm_version=version,
            user_id=999999,
            candidate_id=1,
            score=0.5,
            **{f"s_{n}": 0.5 for n in schema.SUBSCORE_COLUMNS},
            reason_id=1,
            computed_at=sa.func.now(),
        )
    )


def test_nightly_swaps_partitions_per_version(pg_db: Any) -> None:
    db = pg_db
    with db.engine.begin() as conn:
        seed.write(conn, seed.generate(200, 5, NOW))
    v1, v2 = config_for("v1"), config_for("v2-exp")
    for job in ("quiz", "interests", "ratings"):
        run(db, job, v1)
    # a stray v1 row written before the first nightly lives in the default partition
    with db.engine.begin() as conn:
        insert_stray_row(conn, "v1")
    run_id, _ = run(db, "match", v1)
    first = rows(db, "v1")
    assert first and all(r[0] != 999999 for r in first)
    assert partitions(db) == sorted(["match_scores_default", swap.partition_name("v1")])
    with db.engine.connect() as conn:
        meta = json.loads(
            conn.execute(
                sa.text("SELECT metadata FROM job_runs WHERE id = :i"), {"i": run_id}
            ).scalar_one()
        )
    assert meta["write_mode"] == "stage_and_swap"
    # the stage's indexes became the partition's share of the parent's: none built twice
    with db.engine.connect() as conn:
        adopted = conn.execute(
            sa.text(
                "SELECT parent.relname FROM pg_index i "
                "JOIN pg_inherits h ON h.inhrelid = i.indexrelid "
                "JOIN pg_class parent ON parent.oid = h.inhparent "
                "WHERE i.indrelid = to_regclass(:part)"
            ),
            {"part": swap.partition_name("v1")},
        ).scalars()
        assert sorted(adopted) == ["ix_match_scores_reverse", "pk_match_scores"]
        own = conn.execute(
            sa.text("SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(:part)"),
            {"part": swap.partition_name("v1")},
        ).scalar_one()
        assert own == 2
    # a second version gets its own partition and leaves v1 untouched; a rerun is identical
    run(db, "match", v2)
    run(db, "match", v1)
    assert rows(db, "v1") == first
    assert len(partitions(db)) == 3
    assert rows(db, "v2-exp")
    # no stage table is left behind
    with db.engine.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'match_scores_stage_%'")
        ).scalar_one()
    assert left == 0


@pytest.mark.parametrize("version", ["v1", "a.b-c_d"])
def test_partition_names_are_valid_identifiers(version: str) -> None:
    name = swap.partition_name(version)
    assert name.startswith("match_scores_v_") and len(name) <= 63 and name.isidentifier()


def test_a_stage_refuses_rows_of_another_version(pg_db: Any) -> None:
    # The version check is declared with the stage (ATTACH then needs no scan of its own).
    import pandas as pd

    from jobs.errors import StorageError

    stage = swap.stage_name(424242)
    with pg_db.engine.begin() as conn:
        swap.create_stage(conn, stage, "v1")
    frame = pd.DataFrame(
        {
            "user_id": [1],
            "candidate_id": [2],
            "score": [0.5],
            **{c: [0.5] for c in scores.SUBSCORE_COLUMNS},
            "reasons": ["[]"],
        }
    )
    try:
        for version, accepted in (("v1", True), ("v2", False)):
            write = dict(version=version, computed_at=NOW, rewrite=False)
            if accepted:
                with pg_db.engine.begin() as conn:
                    assert swap.write_stage_shard(conn, stage, [1], frame, **write) == (0, 1)
            else:
                with pytest.raises(StorageError), pg_db.engine.begin() as conn:
                    swap.write_stage_shard(conn, stage, [1], frame, **write)
    finally:
        with pg_db.engine.begin() as conn:
            swap.drop_stage(conn, stage)


def seeded(db: Any) -> None:
    with db.engine.begin() as conn:
        seed.write(conn, seed.generate(200, 5, NOW))
    for job in ("quiz", "interests", "ratings"):
        run(db, job, config_for("v1"))


def with_storage(config: config_mod.Config, **storage: Any) -> config_mod.Config:
    data = config.model_dump()
    data["storage"].update(storage)
    return config_mod.from_mapping(data)


def test_nightly_refuses_to_stage_what_the_disk_cannot_hold(pg_db: Any, tmp_path: Any) -> None:
    """Issue 15: a nightly whose stage would not fit on the disk stops before staging, with
    the bytes needed and free in its error; the served rows stay as they were."""
    db = pg_db
    seeded(db)
    run(db, "match", config_for("v1"))
    before = rows(db, "v1")
    absurd = with_storage(config_for("v1"), disk_estimate_factor=1e12, disk_path=str(tmp_path))
    with pytest.raises(StorageError, match=r"needs [\d,]+ bytes .* [\d,]+ free on"):
        run(db, "match", absurd)
    assert rows(db, "v1") == before
    with db.engine.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'match_scores_stage_%'")
        ).scalar_one()
        error = conn.execute(
            sa.text("SELECT error FROM job_runs WHERE job_name = 'match' ORDER BY id DESC")
        ).scalar()
    assert left == 0 and "not enough free disk" in error
    # A sane estimate on the same disk passes, and the run records what it checked.
    run_id, _ = run(db, "match", with_storage(config_for("v1"), disk_path=str(tmp_path)))
    with db.engine.connect() as conn:
        meta = json.loads(
            conn.execute(
                sa.text("SELECT metadata FROM job_runs WHERE id = :i"), {"i": run_id}
            ).scalar_one()
        )
    assert meta["disk_check"]["checked"] and meta["disk_check"]["needed_bytes"] > 0
    assert meta["disk_check"]["bytes_per_row"] != swap.DEFAULT_BYTES_PER_ROW


def test_keep_versions_drops_retired_partitions_only(pg_db: Any) -> None:
    """storage.keep_versions: after a swap, partitions of versions beyond the N most
    recently swapped are dropped; the current version and the default partition's rows of
    never-swapped versions stay."""
    db = pg_db
    seeded(db)
    with db.engine.begin() as conn:  # a version only ever written by the event path
        insert_stray_row(conn, "events-only")
    for version in ("v1", "v2", "v3"):
        run(db, "match", config_for(version))
    assert len(partitions(db)) == 4
    run(db, "match", with_storage(config_for("v2"), keep_versions=2))
    names = {swap.partition_name(v) for v in ("v2", "v3")} | {"match_scores_default"}
    assert set(partitions(db)) == names
    assert not rows(db, "v1") and rows(db, "v2") and rows(db, "v3")
    with db.engine.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT count(*) FROM match_scores WHERE algorithm_version = 'events-only'")
        ).scalar_one()
        hashes = conn.execute(sa.text("SELECT count(*) FROM algorithm_versions")).scalar_one()
    assert kept == 1 and hashes == 3
    # keep 1: only the version just swapped stays
    run(db, "match", with_storage(config_for("v3"), keep_versions=1))
    assert set(partitions(db)) == {swap.partition_name("v3"), "match_scores_default"}
