"""The warm event worker (#12): a held population kept current batch by batch writes the
rows a cold load writes, honours exclusions recorded after its load, and reloads when its
triggers fire; on both engines, through the real worker and the real databases."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import factories
import numpy as np
import pytest
import sqlalchemy as sa

from compute import warm as warm_compute
from compute.population import PER_USER_FIELDS
from jobs import config as config_mod
from jobs import match, runner, worker
from jobs.context import Scope
from jobs.match import core
from jobs.match import users as users_mod
from jobs.match.warm import WarmPopulation
from jobs.storage import events as event_store
from jobs.storage import schema
from jobs.tools import seed as seed_mod

CONFIG_YAML = """\
ray: {enabled: false}
audit: {min_coverage: 0.0}
fanout: {max_reverse: 50}
worker: {poll_interval_s: 0.05, backoff_base_s: 0.05, backoff_max_s: 0.2, warm: %s}
"""
N_USERS = 120


def config_for(tmp_path: Path, warm: bool) -> config_mod.Config:
    path = tmp_path / f"warm-{warm}.yaml"
    path.write_text(CONFIG_YAML % ("true" if warm else "false"))
    return config_mod.load_config([path])


def seeded(db, seed_with_signals, config: config_mod.Config) -> None:
    """The seeded population, its signals and the nightly's lists (match over everyone)."""
    seed_with_signals(db, N_USERS, 11, seed_mod.DEFAULT_NOW, config)
    for job in ("likes", "match"):
        runner.execute(
            job,
            runner.job_function(job),
            engine=db.engine,
            database_url=db.url,
            config=config,
            scope=Scope.all(),
            trigger="nightly",
        )


def drain(db, config: config_mod.Config, warm: WarmPopulation | None) -> None:
    """Process batches until none is due, with one held population across them."""
    while worker.process_batch(db.engine, db.url, config, warm=warm):
        pass


def rows(db, version: str) -> dict[tuple[int, int], tuple]:
    m, p = schema.match_scores, schema.reason_patterns
    subscores = [m.c[name] for name in (f"s_{s}" for s in schema.SUBSCORE_COLUMNS)]
    query = (
        sa.select(m.c.user_id, m.c.candidate_id, m.c.score, *subscores, p.c.reasons)
        .join(p, p.c.id == m.c.reason_id)
        .where(m.c.algorithm_version == version)
    )
    with db.engine.connect() as conn:
        return {(int(r[0]), int(r[1])): tuple(r[2:]) for r in conn.execute(query)}


def computed_at(db, version: str, user: int) -> dt.datetime:
    m = schema.match_scores
    query = sa.select(sa.func.min(m.c.computed_at)).where(
        m.c.algorithm_version == version, m.c.user_id == user
    )
    with db.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def listed(db, version: str) -> list[tuple[int, int]]:
    return sorted(rows(db, version))


def exclusions(db) -> set[tuple[int, int]]:
    with db.engine.connect() as conn:
        likes = conn.execute(sa.select(schema.likes.c.user_id, schema.likes.c.target_id))
        return {(int(a), int(b)) for a, b in likes}


def pick_users(db, version: str) -> dict[str, int]:
    """Distinct users for each event: a quiz changer, a filter changer, a blocker and the
    user blocked (who list each other), and a user others list (deactivated)."""
    pairs = set(listed(db, version))
    excluded = exclusions(db)
    listed_by: dict[int, int] = {}
    for _, b in pairs:
        listed_by[b] = listed_by.get(b, 0) + 1
    mutual = sorted(
        (a, b)
        for a, b in pairs
        if a < b and (b, a) in pairs and (a, b) not in excluded and (b, a) not in excluded
    )
    blocker, blocked = mutual[0]
    taken = {blocker, blocked}
    popular = [u for u in sorted(listed_by, key=lambda u: (-listed_by[u], u)) if u not in taken]
    gone = popular[0]
    taken.add(gone)
    list_size: dict[int, int] = {}
    for a, _ in pairs:
        list_size[a] = list_size.get(a, 0) + 1
    others = sorted(set(list_size) - taken, key=lambda u: (-list_size[u], u))
    return {
        "quiz": others[0],
        "profile": others[1],
        "blocker": blocker,
        "blocked": blocked,
        "gone": gone,
    }


def apply_change(db, kind: str, who: dict[str, int]) -> None:
    """The app's change behind one event, then the event row, as the app writes them."""
    now = runner.utcnow()
    with db.engine.begin() as conn:
        if kind == "quiz_submitted":
            conn.execute(
                sa.text(
                    "UPDATE quiz_answers SET value = (SELECT q.scale_min + q.scale_max FROM "
                    "quiz_questions q WHERE q.id = quiz_answers.question_id) - value "
                    "WHERE user_id = :u"
                ),
                {"u": who["quiz"]},
            )
        elif kind == "profile_updated":
            users = schema.users
            conn.execute(
                sa.update(users)
                .where(users.c.id == who["profile"])
                .values(age_min=users.c.age_min + 3, max_distance_km=30.0, seeking_mask=7)
            )
        elif kind == "like_created":
            frames = factories.source_frames(likes=[(who["blocker"], who["blocked"], "block")])
            conn.execute(sa.insert(schema.likes), frames["likes"].to_dict("records"))
        elif kind == "user_deactivated":
            conn.execute(
                sa.update(schema.users)
                .where(schema.users.c.id == who["gone"])
                .values(is_active=False)
            )
    user = {
        "quiz_submitted": who["quiz"],
        "profile_updated": who["profile"],
        "like_created": who["blocker"],
        "user_deactivated": who["gone"],
    }[kind]
    other = who["blocked"] if kind == "like_created" else None
    event_store.enqueue(db.engine, kind, user, now, other_user_id=other)


def assert_same_rows(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for pair, values in want.items():
        mine = got[pair]
        assert np.allclose(mine[:-1], values[:-1], rtol=0, atol=1e-6), pair
        assert mine[-1] == values[-1], pair  # the reasons


EVENTS = ("quiz_submitted", "profile_updated", "like_created", "user_deactivated")


def test_warm_worker_writes_the_rows_a_cold_worker_writes(db, twin_db, seed_with_signals, tmp_path):
    warm_config, cold_config = config_for(tmp_path, True), config_for(tmp_path, False)
    cold_db = twin_db
    for target in (db, cold_db):
        seeded(target, seed_with_signals, warm_config)
    version = warm_config.algorithm_version
    assert listed(db, version) == listed(cold_db, version)
    who = pick_users(db, version)
    held = worker.warm_population(warm_config)
    assert held is not None and worker.warm_population(cold_config) is None
    before = rows(db, version)
    for kind in EVENTS:
        # Event by event, alternating, so both compute at nearly the same now.
        for target, config, warm in ((db, warm_config, held), (cold_db, cold_config, None)):
            apply_change(target, kind, who)
            drain(target, config, warm)
    assert held.loads == 1  # loaded once, kept current since
    warm_rows, cold_rows = rows(db, version), rows(cold_db, version)
    assert_same_rows(warm_rows, cold_rows)
    # the events did change the lists, and the block and deactivation hold
    pairs = set(warm_rows)
    assert pairs != set(before)
    assert (who["blocker"], who["blocked"]) not in pairs
    assert (who["blocked"], who["blocker"]) not in pairs
    assert not any(who["gone"] in pair for pair in pairs)
    for user in (who["quiz"], who["profile"]):
        mine = {p: v for p, v in warm_rows.items() if p[0] == user}
        assert mine != {p: v for p, v in before.items() if p[0] == user}
    # what the worker holds equals a whole cold load of the current tables
    settings = core.settings_from_config(warm_config)
    now = runner.utcnow()
    with db.engine.connect() as conn:
        cold_pop, _, _ = core.load_clean(conn, now, settings)
    warm_pop = held.region(None, now, settings).pop
    for name in (*PER_USER_FIELDS, "excluded_indptr", "excluded_rows", "interest_ids"):
        a, b = getattr(warm_pop, name), getattr(cold_pop, name)
        assert a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def test_a_block_recorded_after_the_load_is_honoured_without_its_event(
    db, seed_with_signals, tmp_path
):
    """X lists Y. X blocks Y after the worker loaded, and no event says so yet; a run with
    the fan-out inline (as the worker's refill after a like or a deactivation) for S1 (whom
    X lists) and S2 (whom Y lists) rescores X and Y as listers from the held population,
    which still allows X–Y: the publish guard must drop the pair, both ways. (A batch's
    deferred fan-out re-reads the users it scores, so it would see the block itself.)"""
    config = config_for(tmp_path, True)
    seeded(db, seed_with_signals, config)
    version = config.algorithm_version
    held = worker.warm_population(config)
    assert held is not None
    pairs = set(listed(db, version))
    excluded = exclusions(db)
    # warm the worker up with an unrelated event
    first = min(a for a, _ in pairs)
    event_store.enqueue(db.engine, "profile_updated", first, runner.utcnow())
    drain(db, config, held)
    assert held.loads == 1
    pairs = set(listed(db, version))
    lists: dict[int, set[int]] = {}
    for a, b in pairs:
        lists.setdefault(a, set()).add(b)
    # X lists Y; X lists S1 and Y lists S2, so events for S1 and S2 rescore X and Y.
    x, y, s1, s2 = next(
        (x, y, min(lists[x] - {y, first}), min(lists[y] - {x, first}))
        for x, y in sorted(pairs)
        if first not in (x, y)
        and (x, y) not in excluded
        and (y, x) not in excluded
        and lists[x] - {y, first}
        and lists.get(y, set()) - {x, first}
    )
    before = rows(db, version)
    stamped = {user: computed_at(db, version, user) for user in (x, y)}
    add = factories.source_frames(likes=[(x, y, "block")])
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.likes), add["likes"].to_dict("records"))
    runner.execute(
        "match",
        functools.partial(match.run, warm=held, fanout="inline"),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.users(*sorted({s1, s2})),
        trigger="event",
    )
    assert held.loads == 1
    after = rows(db, version)
    assert (x, y) not in after and (y, x) not in after
    assert (x, y) in before
    # X and Y were rescored in that run, from a population that still allows the pair
    for user in (x, y):
        assert computed_at(db, version, user) > stamped[user]
    held_pairs = warm_compute.exclusion_id_pairs(
        held.region(None, runner.utcnow(), core.settings_from_config(config)).pop
    )
    assert [x, y] not in held_pairs.tolist()


def test_the_held_region_is_the_database_region(db, seed_with_signals, tmp_path):
    """The warm path cuts candidate regions in memory; they equal the SQL query's."""
    config = config_for(tmp_path, True)
    seed_with_signals(db, N_USERS, 11, seed_mod.DEFAULT_NOW, config)
    settings = core.settings_from_config(config)
    held = WarmPopulation(reload_seconds=60)
    users = schema.users
    with db.engine.connect() as conn:
        ids = np.asarray(sorted(conn.execute(sa.select(users.c.id)).scalars()))
        active = list(conn.execute(sa.select(users.c.id).where(users.c.is_active)).scalars())
        held.prepare(conn, runner.utcnow(), settings, ids[:1])
        rng = np.random.default_rng(0)
        for targets in [ids[:1], ids[-1:], rng.choice(ids, 5, replace=False), ids]:
            targets = np.sort(targets)
            want = users_mod.region_ids(conn, targets, settings)
            got = held.region_ids(targets, settings)
            assert want is not None and got is not None
            # the query also returns inactive targets, which no load holds
            assert got.tolist() == want[np.isin(want, active)].tolist()


@pytest.fixture
def loaded(db, seed_with_signals, tmp_path):
    config = config_for(tmp_path, True)
    seeded(db, seed_with_signals, config)
    ticks = [0.0]
    held = WarmPopulation(reload_seconds=60, clock=lambda: ticks[0])
    settings = core.settings_from_config(config)
    some = np.array([1], dtype=np.int64)
    with db.engine.connect() as conn:
        figures = held.prepare(conn, runner.utcnow(), settings, some)
        assert figures["reloaded"] == "not_loaded" and held.loads == 1
        again = held.prepare(conn, runner.utcnow(), settings, some)
        assert "reloaded" not in again and again["refreshed_users"] == 1 and held.loads == 1
    return db, config, settings, held, ticks, some


def test_reload_after_reload_seconds(loaded):
    db, _, settings, held, ticks, some = loaded
    with db.engine.connect() as conn:
        ticks[0] = 59.0
        assert held.reload_reason(conn, settings) is None
        ticks[0] = 60.0
        assert held.reload_reason(conn, settings) == "reload_seconds"
        assert held.prepare(conn, runner.utcnow(), settings, some)["reloaded"] == "reload_seconds"
        assert held.loads == 2 and held.reload_reason(conn, settings) is None


def test_reload_when_the_scoring_hash_changes(loaded, tmp_path):
    db, _, settings, held, _, some = loaded
    path = tmp_path / "heavier-quiz.yaml"
    path.write_text("weights: {quiz: 0.5}\n")
    other = core.settings_from_config(config_mod.load_config([tmp_path / "warm-True.yaml", path]))
    assert other.config_hash != settings.config_hash
    with db.engine.connect() as conn:
        assert held.reload_reason(conn, settings) is None
        assert held.reload_reason(conn, other) == "scoring_hash"
        assert held.prepare(conn, runner.utcnow(), other, some)["reloaded"] == "scoring_hash"
        assert held.loads == 2 and held.reload_reason(conn, other) is None


@pytest.mark.parametrize("job", ["nightly", "match", "quiz"])
def test_reload_after_a_newer_whole_scope_run(loaded, job):
    db, config, settings, held, _, some = loaded
    # a users-scope run (the event path's) changes nothing; the pipeline has no users
    # scope, its match step has
    for_users = "match" if job == "nightly" else job
    runner.execute(
        for_users,
        runner.job_function(for_users),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.users(int(some[0])),
        trigger="event",
    )
    with db.engine.connect() as conn:
        assert held.reload_reason(conn, settings) is None
    runner.execute(
        job,
        runner.job_function(job),
        engine=db.engine,
        database_url=db.url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: runner.utcnow() + dt.timedelta(seconds=1),
    )
    with db.engine.connect() as conn:
        assert held.reload_reason(conn, settings) == "whole_scope_run"
        assert held.prepare(conn, runner.utcnow(), settings, some)["reloaded"] == (
            "whole_scope_run"
        )
        assert held.loads == 2 and held.reload_reason(conn, settings) is None


def test_a_failed_whole_scope_run_does_not_reload(loaded):
    db, _, settings, held, _, _ = loaded
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.job_runs).values(
                job_name="nightly",
                status="failed",
                trigger="nightly",
                scope="all",
                started_at=runner.utcnow(),
                finished_at=runner.utcnow() + dt.timedelta(seconds=5),
                algorithm_version="v1",
                config_hash="0" * 16,
                heartbeat_at=runner.utcnow(),
            )
        )
    with db.engine.connect() as conn:
        assert held.reload_reason(conn, settings) is None


def test_score_user_stays_cold_and_warm_can_be_switched_off(tmp_path):
    assert worker.warm_population(config_for(tmp_path, False)) is None
    defaults = config_mod.load_config()
    assert defaults.worker.warm is True and defaults.worker.reload_seconds == 900


def test_an_idle_worker_loads_and_reloads_outside_any_batch(loaded):
    db, config, _, held, ticks, _ = loaded
    fresh = WarmPopulation(reload_seconds=60)
    assert worker.keep_warm(db.engine, config, fresh) == "not_loaded" and fresh.loads == 1
    assert worker.keep_warm(db.engine, config, fresh) is None and fresh.loads == 1
    ticks[0] = 61.0
    assert worker.keep_warm(db.engine, config, held) == "reload_seconds" and held.loads == 2


def assert_holds_the_tables(db, held: WarmPopulation, config: config_mod.Config) -> None:
    """What ``held`` holds equals a whole cold load of the current tables."""
    settings = core.settings_from_config(config)
    now = runner.utcnow()
    with db.engine.connect() as conn:
        cold_pop, _, _ = core.load_clean(conn, now, settings)
    warm_pop = held.region(None, now, settings).pop
    for name in (*PER_USER_FIELDS, "excluded_indptr", "excluded_rows", "interest_ids"):
        a, b = getattr(warm_pop, name), getattr(cold_pop, name)
        assert a.shape == b.shape, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def test_a_worker_re_reads_the_users_of_events_another_worker_settled(
    db, seed_with_signals, tmp_path
):
    """Two replicas: B processes a quiz change, a block and a deactivation; A's next batch
    re-reads those users too, so what A holds is the tables again."""
    config = config_for(tmp_path, True)
    seeded(db, seed_with_signals, config)
    version = config.algorithm_version
    held_a, held_b = worker.warm_population(config), worker.warm_population(config)
    assert held_a is not None and held_b is not None
    who = pick_users(db, version)
    # both load first (A's first batch, B's first batch)
    for held, user in ((held_a, who["quiz"]), (held_b, who["profile"])):
        event_store.enqueue(db.engine, "profile_updated", user, runner.utcnow())
        drain(db, config, held)
    for kind in ("quiz_submitted", "like_created", "user_deactivated"):
        apply_change(db, kind, who)
        drain(db, config, held_b)
    # A's next batch is about somebody else
    event_store.enqueue(db.engine, "profile_updated", who["profile"], runner.utcnow())
    drain(db, config, held_a)
    assert held_a.loads == 1 and held_b.loads == 1
    assert_holds_the_tables(db, held_a, config)


def test_the_settled_floor_stops_below_the_oldest_open_event(db, load_source):
    """A reload reads events from the settled floor up, never the whole queue's history."""
    load_source(users=[(1,), (2,)])
    with db.engine.connect() as conn:
        assert event_store.settled_floor(conn) == 0
    ids = [event_store.enqueue(db.engine, "profile_updated", u, runner.utcnow()) for u in (1, 2, 1)]
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(schema.events).where(schema.events.c.id == ids[0]).values(status="done")
        )
    with db.engine.connect() as conn:
        assert event_store.settled_floor(conn) == ids[1] - 1
        assert [e[0] for e in event_store.events_after(conn, ids[1] - 1)] == ids[1:]
    with db.engine.begin() as conn:
        conn.execute(sa.update(schema.events).values(status="coalesced"))
    with db.engine.connect() as conn:
        assert event_store.settled_floor(conn) == ids[2]
