"""One version, one scoring: the rows of an algorithm version carry one scoring hash.

Regression (issue 10.2): ``config_hash`` hashed every config section, operational ones
too, so a worker started with another ``fanout.max_reverse`` wrote 829 v1 rows under a
second hash beside the nightly's 189,750; and nothing stopped a config with other weights
from rewriting an existing version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.errors import VersionConflictError
from jobs.match import core as match
from jobs.storage import scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def make_config(**sections: dict[str, Any]) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    overrides: dict[str, dict[str, Any]] = {
        "scoring": {"top_k": 12},
        "ray": {"enabled": False, "shard_size": 70},
        "audit": {"sample_users": 20},
    }
    for name, values in sections.items():
        overrides[name] = {**overrides.get(name, {}), **values}
    for name, values in overrides.items():
        data[name] = {**data[name], **values}
    return config_mod.from_mapping(data, source="test")


def run_match(db: Any, config: config_mod.Config, scope: Scope, **options: Any) -> Any:
    return runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=scope,
        trigger="nightly" if scope.is_all else "event",
        clock=lambda: NOW,
        **options,
    )[1]


def hashes(db: Any, version: str = "v1") -> dict[str, int]:
    """Rows of ``version`` per scoring hash they are served under (since 0012 the hash is
    the version's, in algorithm_versions, not a copy on each row)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT v.scoring_hash, count(*) FROM match_scores m JOIN algorithm_versions v "
                "ON v.algorithm_version = m.algorithm_version WHERE m.algorithm_version = :v "
                "GROUP BY v.scoring_hash"
            ),
            {"v": version},
        ).all()
    return {h: n for h, n in rows}


def registered(db: Any, version: str = "v1") -> str | None:
    with db.engine.connect() as conn:
        return scores.stored_scoring_hash(conn, version)


@pytest.fixture
def world(db: Any, seed_with_signals: Any) -> Any:
    seed_with_signals(db, 200, 9, NOW)
    return db


def test_the_scoring_hash_ignores_operational_sections() -> None:
    base = match.settings_from_config(make_config()).config_hash
    operational = make_config(
        fanout={"max_reverse": 7},
        ray={"num_actors": 1, "shard_size": 5, "enabled": True},
        worker={"batch_size": 3},
        runner={"lease_s": 600},
        audit={"sample_users": 3, "seed": 4},
        retry={"write_attempts": 9},
        feed={"score_threshold": 0.5},
    )
    assert match.settings_from_config(operational).config_hash == base
    for changed in (
        make_config(weights={"proximity": 0.9}),
        make_config(signals={"proximity_scale_km": 5}),
        make_config(filters={"default_max_distance_km": 10}),
        make_config(scoring={"top_k": 11}),
        make_config(candidates={"margin": 3}),
        make_config(ratings={"dimension_weights": {"looks": 1.0}}),
    ):
        assert match.settings_from_config(changed).config_hash != base


def test_a_setting_added_later_leaves_the_hash_of_configs_without_it_alone() -> None:
    """Versions written before ``ratings.dimension_weights`` existed keep their hash: the
    key is hashed only when set (its SHA-256 over the settings as they were then)."""
    settings = match.settings_from_config(make_config())
    before = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in match.OPERATIONAL_SETTINGS
    }
    hashed = {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in before.items()
    }
    del hashed["load"]["rating_dimension_weights"]
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), default=repr)
    assert settings.config_hash == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_a_worker_with_another_fanout_writes_the_nightly_hash(world: Any) -> None:
    """The issue's 829 rows: the event path with another fan-out cap used a second hash."""
    run_match(world, make_config(), Scope.all())
    user = _first_user(world)
    run_match(world, make_config(fanout={"max_reverse": 1}), Scope.users(user))
    assert len(hashes(world)) == 1
    assert registered(world) == next(iter(hashes(world)))


def _first_user(db: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT min(user_id) FROM match_scores")).scalar_one())


@pytest.mark.parametrize("scope", ["all", "user"])
def test_other_weights_may_not_rewrite_a_version(world: Any, scope: str) -> None:
    run_match(world, make_config(), Scope.all())
    before = hashes(world)
    theirs = next(iter(before))
    other = make_config(weights={"proximity": 0.9})
    ours = match.settings_from_config(other).config_hash
    target = Scope.all() if scope == "all" else Scope.users(_first_user(world))
    with pytest.raises(VersionConflictError) as caught:
        run_match(world, other, target)
    message = str(caught.value)
    assert theirs in message and ours in message and "--replace-version" in message
    assert hashes(world) == before
    with world.engine.connect() as conn:
        status = (
            conn.execute(
                sa.text("SELECT status FROM job_runs WHERE job_name = 'match' ORDER BY id DESC")
            )
            .scalars()
            .first()
        )
    assert status == "failed"


def test_replace_version_rewrites_every_row_and_the_registry(world: Any) -> None:
    run_match(world, make_config(), Scope.all())
    other = make_config(weights={"proximity": 0.9})
    ours = match.settings_from_config(other).config_hash
    result = run_match(world, other, Scope.all(), replace_version=True)
    assert hashes(world) == {ours: result.rows_written}
    assert registered(world) == ours
    # and from now on the old config is the one refused
    with pytest.raises(VersionConflictError):
        run_match(world, make_config(), Scope.users(_first_user(world)))


def test_a_new_version_is_registered_by_its_first_write(world: Any) -> None:
    assert registered(world) is None
    config = make_config()
    run_match(world, config, Scope.users(_first_user_of_users(world)))
    assert registered(world) == match.settings_from_config(config).config_hash


def _first_user_of_users(db: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT min(id) FROM users WHERE is_active")).scalar_one())
