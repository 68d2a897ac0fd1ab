"""The event kinds for likes, passes, blocks, profile edits, deactivation and revived
conversations: each changes exactly the rows it should, on both engines; a storm is coalesced
across the queue and the reverse fan-out cap holds; the backfill takes stale users first and
skips users with no candidate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import factories
import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs import runner, worker
from jobs.storage import api, immediate, schema, set_states
from jobs.storage import events as event_store
from jobs.storage import population as population_store
from jobs.tools import seed as seed_mod

CONFIG_YAML = """\
ray: {enabled: false}
audit: {min_coverage: 0.0}
fanout: {max_reverse: %d}
worker: {poll_interval_s: 0.05, backoff_base_s: 0.05, backoff_max_s: 0.2, batch_size: %d}
"""
SIGNAL_AND_SOURCE = (
    *(t.name for t in schema.SOURCE_TABLES),
    "user_quiz_vectors",
    "user_interest_index",
    "user_interest_vectors",
    "profile_rating_aggregates",
    "user_rating_preferences",
)


def make_config(tmp_path: Path, max_reverse: int = 0, batch_size: int = 100) -> Path:
    path = tmp_path / f"events-{max_reverse}-{batch_size}.yaml"
    path.write_text(CONFIG_YAML % (max_reverse, batch_size))
    return path


@pytest.fixture
def scored(db, seed_with_signals, run_signal_job, tmp_path):
    """A seeded population whose lists and feed the nightly's match and feed jobs wrote."""
    config = config_mod.load_config([make_config(tmp_path)])
    seed_with_signals(db, 120, 11, seed_mod.DEFAULT_NOW, config)
    for job in ("match", "feed"):
        run_signal_job(job, now=runner.utcnow(), config=config)
    return db, config


def pairs(db, version: str) -> set[tuple[int, int]]:
    m = schema.match_scores
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.c.user_id, m.c.candidate_id).where(m.c.algorithm_version == version)
        )
        return {(int(a), int(b)) for a, b in rows}


def mutual_pair(db, version: str) -> tuple[int, int]:
    """Two users who list each other and have no like, pass or block between them."""
    listed = pairs(db, version)
    with db.engine.connect() as conn:
        liked = {
            (int(a), int(b))
            for a, b in conn.execute(sa.select(schema.likes.c.user_id, schema.likes.c.target_id))
        }
    for a, b in sorted(listed):
        if a < b and (b, a) in listed and (a, b) not in liked and (b, a) not in liked:
            return a, b
    pytest.fail("the seeded population has no pair listing each other")


def add_like(db, user: int, target: int, kind: str) -> None:
    frames = factories.source_frames(likes=[(user, target, kind)])
    with db.engine.begin() as conn:
        conn.execute(sa.insert(schema.likes), frames["likes"].to_dict("records"))


def drain(db, config) -> worker.WorkerStats:
    return worker.run_worker(db.engine, db.url, config, once=True)


# match_rows' columns: match_scores' without computed_at (a rescore restamps them)
ROW_COLUMNS = [c.name for c in schema.match_scores.columns if c.name != "computed_at"]
CANDIDATE_AT = ROW_COLUMNS.index("candidate_id")


def match_rows(snap, version: str) -> dict[int, set[tuple]]:
    """match_scores rows per user, in :data:`ROW_COLUMNS`."""
    columns = [c.name for c in schema.match_scores.columns]
    user_at = columns.index("user_id")
    kept = [columns.index(c) for c in ROW_COLUMNS]
    out: dict[int, set[tuple]] = {}
    for row in snap["match_scores"]:
        out.setdefault(int(row[user_at]), set()).add(tuple(row[i] for i in kept))
    return out


@pytest.mark.parametrize("kind", ["pass", "block"])
def test_pass_or_block_leaves_both_lists_and_touches_only_the_pair(scored, run_signal_job, kind):
    db, config = scored
    version = config.algorithm_version
    a, b = mutual_pair(db, version)
    before = factories.snapshot(db.engine)
    add_like(db, a, b, kind)
    event_store.enqueue(db.engine, "like_created", a, runner.utcnow(), other_user_id=b)
    stats = drain(db, config)
    assert stats.events_done == 1 and stats.pairs_removed >= 2
    after = factories.snapshot(db.engine)
    assert (a, b) not in pairs(db, version) and (b, a) not in pairs(db, version)
    for table in SIGNAL_AND_SOURCE:
        if table != "likes":
            assert after[table] == before[table], table
    old, new = match_rows(before, version), match_rows(after, version)
    # fanout.max_reverse 0: only the two users' lists are refilled, nobody else's changes
    assert {u for u in old.keys() | new.keys() if old.get(u) != new.get(u)} <= {a, b}
    assert after["feed_cards"][: len(before["feed_cards"])] == before["feed_cards"]
    # never again, even after a nightly between
    run_signal_job("match", now=runner.utcnow(), config=config)
    assert (a, b) not in pairs(db, version) and (b, a) not in pairs(db, version)


def test_block_by_a_worker_process_holds_through_a_nightly(scored, tmp_path):
    """The CLI worker (a real process) removes a blocked pair; a nightly after it keeps it out."""
    db, config = scored
    version = config.algorithm_version
    a, b = mutual_pair(db, version)
    add_like(db, b, a, "block")
    config_file = make_config(tmp_path)
    base = [sys.executable, "-m", "jobs", "--db", db.url, "--config", str(config_file)]
    queued = subprocess.run(
        [*base, "event", "like_created", str(b), "--other", str(a)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert queued.returncode == 0, queued.stderr
    done = subprocess.run(
        [*base, "worker", "--once", "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pairs_removed"] >= 2
    assert not {(a, b), (b, a)} & pairs(db, version)
    nightly = subprocess.run([*base, "run", "match"], capture_output=True, text=True, timeout=600)
    assert nightly.returncode == 0, nightly.stderr
    assert not {(a, b), (b, a)} & pairs(db, version)


def test_mutual_like_makes_one_card_each_and_removes_the_pair(scored):
    db, config = scored
    version = config.algorithm_version
    a, b = mutual_pair(db, version)
    add_like(db, a, b, "like")
    add_like(db, b, a, "like")
    now = runner.utcnow()
    for _ in range(3):  # duplicates, and the other side's event too
        event_store.enqueue(db.engine, "like_created", a, now, other_user_id=b)
    event_store.enqueue(db.engine, "like_created", b, now, other_user_id=a)
    drain(db, config)
    event_store.enqueue(db.engine, "like_created", b, runner.utcnow(), other_user_id=a)
    drain(db, config)
    assert not {(a, b), (b, a)} & pairs(db, version)
    cards = schema.feed_cards
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(cards.c.user_id, cards.c.other_user_id, cards.c.reason).where(
                cards.c.cause == "mutual_match",
                cards.c.user_id.in_([a, b]),
                cards.c.other_user_id.in_([a, b]),
            )
        ).all()
    assert sorted((r.user_id, r.other_user_id) for r in rows) == [(a, b), (b, a)]
    for r in rows:
        assert json.loads(r.reason) == {
            "cause": "mutual_match",
            "reasons": [{"code": "mutual_like", "text": "You liked each other"}],
        }


def test_every_card_reason_has_one_shape_naming_its_cause(scored):
    db, _ = scored
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.feed_cards.c.cause, schema.feed_cards.c.reason)).all()
    assert rows, "the seeded nightly made no card"
    for cause, reason in rows:
        parsed = json.loads(reason)
        assert parsed["cause"] == cause
        assert all({"code", "text"} <= set(r) for r in parsed["reasons"])


def test_conversation_revived_cards_once_and_never_for_a_blocked_pair(scored):
    db, config = scored
    version = config.algorithm_version
    a, b = mutual_pair(db, version)
    before = factories.snapshot(db.engine)
    for _ in range(2):
        event_store.enqueue(db.engine, "conversation_revived", a, runner.utcnow(), other_user_id=b)
        drain(db, config)
    after = factories.snapshot(db.engine)
    new_cards = [r for r in after["feed_cards"] if r not in before["feed_cards"]]
    assert sorted((r[1], r[2], r[4]) for r in new_cards) == [
        (a, b, "conversation_revived"),
        (b, a, "conversation_revived"),
    ]
    for table in (*SIGNAL_AND_SOURCE, "match_scores"):
        assert after[table] == before[table], table
    c, d = sorted(pairs(db, version) - {(a, b), (b, a)})[0]
    add_like(db, d, c, "block")
    event_store.enqueue(db.engine, "conversation_revived", c, runner.utcnow(), other_user_id=d)
    drain(db, config)
    with db.engine.connect() as conn:
        blocked = conn.execute(
            sa.select(sa.func.count()).where(
                schema.feed_cards.c.cause == "conversation_revived",
                schema.feed_cards.c.user_id.in_([c, d]),
                schema.feed_cards.c.other_user_id.in_([c, d]),
            )
        ).scalar_one()
    assert blocked == 0


def test_deactivation_removes_the_user_everywhere_at_once(scored):
    db, config = scored
    version = config.algorithm_version
    listed = pairs(db, version)
    user = max({b for _, b in listed}, key=lambda u: sum(1 for _, c in listed if c == u))
    listers = {a for a, c in listed if c == user}
    before = factories.snapshot(db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(schema.users).where(schema.users.c.id == user).values(is_active=False)
        )
    event_store.enqueue(db.engine, "user_deactivated", user, runner.utcnow())
    stats = drain(db, config)
    assert stats.users_forgotten == 1
    after = factories.snapshot(db.engine)
    with db.engine.connect() as conn:
        for table, columns in immediate.USER_COLUMNS.items():
            if not columns:  # a table that names no user
                continue
            t = schema.metadata.tables[table]
            left = conn.execute(
                sa.select(sa.func.count()).where(sa.or_(*(t.c[c] == user for c in columns)))
            ).scalar_one()
            assert left == 0, table
    # fanout.max_reverse 0: those who listed the user wait for the nightly, marked stale
    with db.engine.connect() as conn:
        stale = set(set_states.marked_ids(conn, version, "stale").tolist())
    assert listers and listers <= stale
    old, new = match_rows(before, version), match_rows(after, version)
    for u in old.keys() - {user}:
        assert {r for r in old[u] if r[CANDIDATE_AT] != user} == new.get(u, set()), u
    for table in SIGNAL_AND_SOURCE:
        if table not in ("users", *immediate.USER_COLUMNS):
            assert after[table] == before[table], table


@pytest.mark.parametrize("cap", [0, 500])
def test_profile_update_removes_the_user_from_lists_it_now_fails(scored, tmp_path, cap):
    """Listers lose a pair their filters now refuse at once; up to the cap their lists are
    refilled, past it they are marked stale; the user's own list is rescored."""
    db, _ = scored
    config = config_mod.load_config([make_config(tmp_path, max_reverse=cap)])
    version = config.algorithm_version
    listed = pairs(db, version)
    user = max({b for _, b in listed}, key=lambda u: sum(1 for _, c in listed if c == u))
    listers = {a for a, c in listed if c == user}
    with db.engine.begin() as conn:
        # seeking nobody the listers are: nonbinary only, and they are women/men in the seed
        genders = dict(conn.execute(sa.select(schema.users.c.id, schema.users.c.gender)).all())
        wanted = next(g for g in range(3) if all(genders[u] != g for u in listers))
        conn.execute(
            sa.update(schema.users)
            .where(schema.users.c.id == user)
            .values(seeking_mask=1 << wanted)
        )
    event_store.enqueue(db.engine, "profile_updated", user, runner.utcnow())
    drain(db, config)
    now_listed = pairs(db, version)
    assert not {(u, user) for u in listers} & now_listed
    assert not any(genders[c] != wanted for u, c in now_listed if u == user)
    with db.engine.connect() as conn:
        stale = set(set_states.marked_ids(conn, version, "stale").tolist())
    if cap == 0:
        assert listers <= stale
    else:
        refilled = [
            r for r in job_runs(db, "match") if r["metadata"]["reverse"]["fanout"] == "none"
        ]
        assert len(refilled) == 1 and not listers & stale
        assert refilled[0]["finished_at"] <= job_runs(db, "match")[-1]["started_at"]


def test_profile_update_reaches_newly_eligible_users(scored, tmp_path):
    """Regression: the reverse fan-out reached only users who already listed the changed
    user, so one who became eligible for others reached nobody until the nightly."""
    db, _ = scored
    config = config_mod.load_config([make_config(tmp_path, max_reverse=50)])
    version = config.algorithm_version
    listed = pairs(db, version)
    with db.engine.connect() as conn:
        users = {
            int(r.id): r
            for r in conn.execute(sa.select(schema.users).where(schema.users.c.is_active))
        }
    # someone in nobody's list, made the twin of a popular user (same filters and place)
    popular = max({b for _, b in listed}, key=lambda u: sum(1 for _, c in listed if c == u))
    loner = next(u for u in sorted(users) if u != popular and not any(c == u for _, c in listed))
    twin = users[popular]
    with db.engine.begin() as conn:
        conn.execute(
            sa.update(schema.users)
            .where(schema.users.c.id == loner)
            .values(
                **{c: getattr(twin, c) for c in population_store.FILTER_COLUMNS if c != "is_active"}
            )
        )
    event_store.enqueue(db.engine, "profile_updated", loner, runner.utcnow())
    drain(db, config)
    newly = {u for u, c in pairs(db, version) if c == loner and u != loner}
    assert newly
    # The loner's own list committed in a run of its own; the newly eligible were scored
    # in the follow-up run, which started after it had finished.
    runs = job_runs(db, "match")
    own = [r for r in runs if r["metadata"]["reverse"]["fanout"] == "own"]
    follow_up = [r for r in runs if r["metadata"]["reverse"]["fanout"] == "reverse"]
    assert len(own) == len(follow_up) == 1
    assert own[0]["metadata"]["reverse_users"] == 0
    assert newly <= set(follow_up[0]["metadata"]["newly_eligible_user_ids"])
    assert own[0]["finished_at"] <= follow_up[0]["started_at"]


def job_runs(db, job: str) -> list[dict[str, Any]]:
    """The event runs of ``job``, oldest first: metadata (parsed), started_at, finished_at."""
    runs = schema.job_runs
    with db.engine.connect() as conn:
        found = conn.execute(
            sa.select(runs.c.metadata, runs.c.started_at, runs.c.finished_at)
            .where(runs.c.job_name == job, runs.c.trigger == "event")
            .order_by(runs.c.id)
        ).all()
    return [{**r._asdict(), "metadata": json.loads(r.metadata)} for r in found]


def test_storm_is_coalesced_across_batches_and_the_cap_holds(scored, tmp_path):
    db, _ = scored
    config = config_mod.load_config([make_config(tmp_path, max_reverse=3, batch_size=4)])
    version = config.algorithm_version
    listed = pairs(db, version)
    listed_by = {c: sum(1 for _, d in listed if d == c) for _, c in listed}
    storm_users = sorted(sorted(listed_by, key=lambda u: (-listed_by[u], u))[:6])
    assert sum(listed_by[u] for u in storm_users[:4]) > 3 + 4, "too few listers for the cap"
    now = runner.utcnow()
    ids = [
        event_store.enqueue(db.engine, "quiz_submitted", u, now)
        for _ in range(10)
        for u in storm_users
    ]
    stats = drain(db, config)
    assert stats.events_done == len(storm_users)
    assert stats.events_coalesced == len(ids) - len(storm_users)
    metas = [r["metadata"] for r in job_runs(db, "match")]
    # one claim took every duplicate: each user was rescored once, in batches of 4 picks,
    # each batch's fan-out in a follow-up run of at most the cap's users
    own = [m for m in metas if m["reverse"]["fanout"] == "own"]
    follow_ups = [m for m in metas if m["reverse"]["fanout"] == "reverse"]
    assert len(own) == len(follow_ups) == 2 and len(metas) == 4
    assert all(m["reverse_users"] == 0 for m in own)
    assert all(m["reverse_users"] <= 3 for m in follow_ups)
    assert sum(m["reverse"]["marked_stale"] for m in metas) > 0


def test_backfill_takes_marked_stale_first_and_skips_users_without_candidates(scored):
    db, config = scored
    version = config.algorithm_version
    with db.engine.connect() as conn:
        empty = set(set_states.marked_ids(conn, version, "empty").tolist())
        listed_users = api.users_with_scores(conn, version)
        before = api.stale_users(conn, version)
    assert not empty & set(before), "users with no candidate are backfilled again"
    marked = listed_users[-2:]
    with db.engine.begin() as conn:
        set_states.mark_stale(conn, version, marked, "fanout_cap", runner.utcnow())
    with db.engine.connect() as conn:
        after = api.stale_users(conn, version)
    assert after[: len(marked)] == marked
