"""The match job end to end on both engines: seeded source rows → signal jobs → match_scores."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from compute import reasons as reasons_mod
from compute import signals as signals_mod
from jobs import config as config_mod
from jobs import runner
from jobs.context import Scope
from jobs.errors import ConfigError, StorageError
from jobs.match import core as match
from jobs.storage import api, schema, scores, signals
from jobs.storage import population as population_store

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
N_USERS = 260

_spec = importlib.util.spec_from_file_location(
    "match_reference", Path(__file__).parents[2] / "unit" / "compute" / "reference.py"
)
assert _spec is not None and _spec.loader is not None
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def make_config(**sections: dict[str, Any]) -> config_mod.Config:
    """Default config with small lists (so top-K truncation matters) and in-process shards."""
    data = config_mod.load_config().model_dump()
    overrides: dict[str, dict[str, Any]] = {
        "candidates": {"quiz_k": 30, "interest_k": 30, "fallback_k": 30},
        "scoring": {"top_k": 12},
        "ray": {"enabled": False, "shard_size": 70},
        "audit": {"sample_users": 40},
        "fanout": {"max_reverse": 3},
    }
    for name, values in sections.items():
        overrides[name] = {**overrides.get(name, {}), **values}
    for name, values in overrides.items():
        data[name] = {**data[name], **values}
    return config_mod.from_mapping(data, source="test")


def run_job(db: Any, config: config_mod.Config, scope: Scope | None = None, **options: Any) -> Any:
    scope = scope or Scope.all()
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


@pytest.fixture
def world(db: Any, seed_with_signals: Any) -> Any:
    """A seeded population with its signal tables written by the signal jobs."""
    seed_with_signals(db, N_USERS, 7, NOW)
    return db


def stored(db: Any, version: str = "v1") -> pd.DataFrame:
    with db.engine.connect() as conn:
        return scores.read_rows(conn, version)


def loaded_population(db: Any, config: config_mod.Config) -> Any:
    settings = match.settings_from_config(config)
    with db.engine.connect() as conn:
        loaded = population_store.load(conn, NOW, settings.load)
    from compute.population import clean_population

    return clean_population(loaded.population)[0]


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """An independent oracle for the distance filter (deliberately not compute.geo's)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


# ------------------------------------------------------------------------------ tests


def test_no_written_pair_violates_a_hard_filter_in_either_direction(world: Any) -> None:
    run_job(world, make_config())
    rows = stored(world)
    assert len(rows) > 500
    with world.engine.connect() as conn:
        users = pd.read_sql(sa.select(schema.users), conn).set_index("id")
        likes = pd.read_sql(sa.select(schema.likes), conn)
    a = users.loc[rows["user_id"].to_numpy()].reset_index(drop=True)
    b = users.loc[rows["candidate_id"].to_numpy()].reset_index(drop=True)
    assert (rows["user_id"].to_numpy() != rows["candidate_id"].to_numpy()).all()
    assert a["is_active"].astype(bool).all() and b["is_active"].astype(bool).all()
    ga, gb = a["gender"].to_numpy(int), b["gender"].to_numpy(int)
    sa_, sb = a["seeking_mask"].to_numpy(int), b["seeking_mask"].to_numpy(int)
    assert (((sa_ >> gb) & 1) == 1).all() and (((sb >> ga) & 1) == 1).all()
    now_day = np.datetime64(NOW.date(), "D")

    def years(frame: pd.DataFrame) -> Any:
        days = (now_day - pd.to_datetime(frame["birth_date"]).to_numpy("datetime64[D]")).astype(
            float
        )
        return np.floor(days / 365.25)

    ya, yb = years(a), years(b)
    assert ((a["age_min"] <= yb) & (yb <= a["age_max"])).all()
    assert ((b["age_min"] <= ya) & (ya <= b["age_max"])).all()
    d = haversine_km(a["latitude"], a["longitude"], b["latitude"], b["longitude"]).to_numpy()
    limit = np.minimum(a["max_distance_km"].fillna(100.0), b["max_distance_km"].fillna(100.0))
    known = ~np.isnan(d)
    assert (d[known] <= limit.to_numpy()[known] + 1e-6).all()
    liked = set(zip(likes["user_id"], likes["target_id"], strict=True))
    pairs = list(zip(rows["user_id"], rows["candidate_id"], strict=True))
    assert not any((u, c) in liked or (c, u) in liked for u, c in pairs)


CALIBRATION = {"intercept": -3.0, "scale": 6.0, "viewer_rate": 2.0, "default_rate": 0.4}


@pytest.mark.parametrize(
    "variant", ["defaults", "reciprocal_dormancy", "calibrated", "calibrated_one_sided"]
)
def test_scores_equal_the_reference_and_reasons_follow_contributions(
    world: Any, variant: str
) -> None:
    config = make_config()
    if variant == "reciprocal_dormancy":
        config = make_config(
            scoring={
                "reciprocal": {"enabled": True, "combine": "harmonic"},
                "dormancy": {"enabled": True, "grace_days": 3, "half_life_days": 10},
            }
        )
    if variant.startswith("calibrated"):
        # One-sided: the stored score is P(user likes candidate), the fitted like model's.
        config = make_config(
            scoring={
                "reciprocal": {
                    "enabled": variant == "calibrated",
                    "combine": "calibrated_harmonic" if variant == "calibrated" else "calibrated",
                    "calibration": CALIBRATION,
                }
            }
        )
    run_job(world, config)
    rows = stored(world)
    pop = loaded_population(world, config)
    row_of = {int(u): i for i, u in enumerate(pop.user_ids)}
    w = config.weights
    weights = {s.name: getattr(w, s.key) for s in signals_mod.SIGNALS}
    sc = config.scoring
    params = reasons_mod.ReasonParams()
    thresholds = dict(zip(signals_mod.SIGNAL_NAMES, params.thresholds(), strict=True))
    total = sum(weights.values())
    named = set(pop.catalogue_interest_ids.tolist())
    sample = rows.iloc[:: max(1, len(rows) // 400)]
    for rec in sample.itertuples():
        a, b = row_of[rec.user_id], row_of[rec.candidate_id]
        expected = reference.score(
            pop,
            a,
            b,
            weights,
            neutral=config.signals.neutral_value,
            reciprocal=sc.reciprocal.enabled,
            fusion=sc.reciprocal.combine,
            dormancy=(sc.dormancy.grace_days, sc.dormancy.half_life_days)
            if sc.dormancy.enabled
            else None,
            calibration=tuple(CALIBRATION.values()) if variant.startswith("calibrated") else None,
        )
        assert rec.score == pytest.approx(expected, abs=2e-6)
        sig = reference.signals(pop, a, b)
        for name, column in zip(signals_mod.SIGNAL_NAMES, scores.SUBSCORE_COLUMNS, strict=True):
            value = config.signals.neutral_value if sig[name] is None else sig[name]
            assert getattr(rec, column) == pytest.approx(value, abs=2e-6)
        qualifying = []
        for name in signals_mod.SIGNAL_NAMES:
            value = sig[name]
            if value is None or value < thresholds[name]:
                continue
            if name == "interest" and not (set(reference.shared_interests(pop, a, b)) & named):
                continue
            qualifying.append((-weights[name] / total * value, name))
        codes = [r["code"] for r in json.loads(rec.reasons)]
        # Contributions within float noise of each other may swap; compare as sets then.
        expected_codes = [reasons_mod.REASON_CODES[n] for _, n in sorted(qualifying)[:3]]
        assert sorted(codes) == sorted(expected_codes)
        if qualifying:
            best = min(qualifying)
            assert codes[0] in {
                reasons_mod.REASON_CODES[n] for c, n in qualifying if c <= best[0] + 1e-9
            }


def test_rerun_gives_identical_rows(world: Any) -> None:
    config = make_config()
    first = run_job(world, config)
    before = stored(world)
    second = run_job(world, config)
    after = stored(world)
    pd.testing.assert_frame_equal(before, after)
    assert first.rows_written == second.rows_written == len(after)
    assert not after.duplicated(["user_id", "candidate_id"]).any()
    assert (after.groupby("user_id").size() <= 12).all()
    with world.engine.connect() as conn:
        hashed = scores.stored_scoring_hash(conn, "v1")
    assert hashed == match.settings_from_config(config).config_hash


def test_versions_are_served_side_by_side(world: Any) -> None:
    run_job(world, make_config())
    v1 = stored(world, "v1")
    other = make_config()
    other = config_mod.from_mapping(
        {
            **other.model_dump(),
            "algorithm_version": "v2-proximity",
            "weights": {**other.weights.model_dump(), "proximity": 0.9},
        }
    )
    run_job(world, other)
    pd.testing.assert_frame_equal(v1, stored(world, "v1"))
    v2 = stored(world, "v2-proximity")
    assert len(v2) > 0
    with world.engine.connect() as conn:
        hashed = scores.stored_scoring_hash(conn, "v2-proximity")
    assert hashed == match.settings_from_config(other).config_hash
    assert not np.allclose(
        v1.sort_values(["user_id", "candidate_id"])["score"].to_numpy()[:50],
        v2.sort_values(["user_id", "candidate_id"])["score"].to_numpy()[:50],
    )


def test_nan_vectors_are_skipped_and_never_reach_a_score(world: Any) -> None:
    with world.engine.begin() as conn:
        victims = conn.execute(
            sa.select(schema.user_quiz_vectors.c.user_id, schema.user_quiz_vectors.c.dim).limit(3)
        ).all()
        for user_id, dim in victims:
            blob = np.full(dim, np.nan, dtype="<f4").tobytes()
            conn.execute(
                sa.update(schema.user_quiz_vectors)
                .where(schema.user_quiz_vectors.c.user_id == user_id)
                .values(vector=blob)
            )
    result = run_job(world, make_config())
    assert result.skipped.get("nan_vector") == 3
    rows = stored(world)
    values = rows[["score", *scores.SUBSCORE_COLUMNS]].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    victim_rows = rows[rows["user_id"].isin([v[0] for v in victims])]
    assert len(victim_rows) > 0
    assert (victim_rows["s_quiz"] == make_config().signals.neutral_value).all()


def test_schema_refuses_a_nan_score(db: Any) -> None:
    with pytest.raises((StorageError, sa.exc.IntegrityError)), db.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.match_scores),
            [
                {
                    "algorithm_version": "v1",
                    "user_id": 1,
                    "candidate_id": 2,
                    "score": math.nan,
                    **{c: 0.5 for c in scores.SUBSCORE_COLUMNS},
                    "reason_id": 1,
                    "computed_at": NOW,
                }
            ],
        )
    frame = pd.DataFrame(
        {
            "user_id": [1],
            "candidate_id": [2],
            "score": [math.nan],
            **{c: [0.5] for c in scores.SUBSCORE_COLUMNS},
            "reasons": ["[]"],
        }
    )

    def replace(conn: Any, frame: pd.DataFrame) -> None:
        guard = population_store.filter_snapshot(conn)
        scores.replace_user_sets(conn, [1], frame, version="v1", computed_at=NOW, guard=guard)

    with pytest.raises(ValueError, match="NaN"), db.engine.begin() as conn:
        replace(conn, frame)
    # missing reasons text: refused by name on both engines, before anything is written
    frame = frame.assign(score=[0.5], reasons=[None])
    with pytest.raises(ValueError, match="missing reasons"), db.engine.begin() as conn:
        replace(conn, frame)


def test_single_user_rows_equal_the_nightly_rows_and_fan_out_is_bounded(world: Any) -> None:
    config = make_config()
    run_job(world, config)
    nightly = stored(world)
    counts = nightly.groupby("candidate_id").size().sort_values(ascending=False)
    popular = int(counts.index[0])  # listed by many users: reverse fan-out must be capped
    assert counts.iloc[0] > config.fanout.max_reverse
    result = run_job(world, config, Scope.users(popular))
    reverse = result.extra["reverse_user_ids"]
    assert len(reverse) == config.fanout.max_reverse
    assert popular not in reverse
    pd.testing.assert_frame_equal(nightly, stored(world))


def test_an_event_loads_only_the_users_region_and_writes_the_nightly_rows(world: Any) -> None:
    config = make_config(fanout={"max_reverse": 0})
    run_job(world, config)
    nightly = stored(world)
    user = int(nightly["user_id"].iloc[len(nightly) // 2])
    with world.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM match_scores WHERE user_id = :u"), {"u": user})
    run_job(world, config, Scope.users(user))
    pd.testing.assert_frame_equal(nightly, stored(world))
    with world.engine.connect() as conn:
        meta = json.loads(
            conn.execute(
                sa.text("SELECT metadata FROM job_runs WHERE scope = :s"), {"s": f"user:{user}"}
            ).scalar_one()
        )
    assert meta["loaded"] == "region"
    assert 0 < meta["loaded_users"] < len(loaded_population(world, config).user_ids)


def test_a_user_without_candidates_loses_their_rows(world: Any) -> None:
    config = make_config()
    run_job(world, config)
    user = int(stored(world)["user_id"].iloc[0])
    with world.engine.begin() as conn:
        conn.execute(
            # Nobody is 120: the user has no candidate left (a seeking mask of 0, which did
            # this before, is refused by the schema since migration 0006).
            sa.update(schema.users)
            .where(schema.users.c.id == user)
            .values(age_min=120, age_max=120)
        )
    run_job(world, make_config(fanout={"max_reverse": 0}), Scope.users(user))
    after = stored(world)
    assert user not in set(after["user_id"])


def test_nightly_removes_users_who_left(world: Any) -> None:
    config = make_config()
    run_job(world, config)
    user = int(stored(world)["user_id"].iloc[0])
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(schema.users).where(schema.users.c.id == user).values(is_active=False)
        )
    run_job(world, config)
    after = stored(world)
    assert user not in set(after["user_id"]) and user not in set(after["candidate_id"])


def test_exposure_cap_is_exact_across_shards(world: Any) -> None:
    config = make_config(scoring={"exposure_cap": {"enabled": True, "max_lists": 4}})
    run_job(world, config)
    rows = stored(world)
    settings = match.settings_from_config(config)
    pop = loaded_population(world, config)
    indexes = match.build_indexes(pop, settings)
    everyone = np.arange(pop.n_users, dtype=np.int64)
    counts = match.uncapped_counts(pop, indexes, everyone, settings)
    expected = match.score_rows(pop, indexes, everyone, settings, counts).frame
    expected = expected.sort_values(
        ["user_id", "score", "candidate_id"], ascending=[True, False, True], kind="stable"
    ).reset_index(drop=True)
    assert (counts > 4).any()
    np.testing.assert_array_equal(rows["candidate_id"], expected["candidate_id"])
    np.testing.assert_allclose(rows["score"], expected["score"], atol=1e-7)


def test_a_reader_sees_the_old_or_the_new_set_never_a_mix(world: Any) -> None:
    run_job(world, make_config())
    old = stored(world)
    users = old.groupby("user_id").size()
    user = int(users.index[users.argmax()])
    changed = make_config()
    changed = config_mod.from_mapping(
        {**changed.model_dump(), "weights": {**changed.weights.model_dump(), "newness": 0.9}}
    )

    def as_set(frame: pd.DataFrame) -> frozenset[tuple[int, float]]:
        return frozenset(
            (int(c), round(float(s), 9))
            for c, s in zip(frame["candidate_id"], frame["score"], strict=True)
        )

    old_set = as_set(old[old["user_id"] == user])
    seen: list[frozenset[tuple[int, float]]] = []
    stop = threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            with world.engine.connect() as conn:
                seen.append(as_set(api.suggestions(conn, "v1", user, 1000)))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for _ in range(2):
            # Two scorings of one version, on purpose (the version contract refuses else).
            run_job(world, changed, replace_version=True)
            run_job(world, make_config(), replace_version=True)
    finally:
        stop.set()
        reader.join()
    run_job(world, changed, replace_version=True)
    changed_rows = stored(world)
    changed_set = as_set(changed_rows[changed_rows["user_id"] == user])
    assert changed_set != old_set and len(seen) > 3
    assert all(s in (old_set, changed_set) for s in seen)


def test_loader_defaults_and_skips_bad_rows(world: Any) -> None:
    with world.engine.begin() as conn:
        user = conn.execute(
            sa.select(schema.users.c.id).where(schema.users.c.is_active).limit(1)
        ).scalar_one()
        conn.execute(
            sa.update(schema.users)
            .where(schema.users.c.id == user)
            .values(max_distance_km=None, latitude=None, longitude=None)
        )
        conn.execute(
            sa.insert(schema.user_interest_index),
            [
                {
                    "user_id": user,
                    "interest_id": 987654,
                    "subject_id": 1,
                    "weight": 0.1,
                    "updated_at": NOW,
                }
            ],
        )
    settings = match.settings_from_config(make_config())
    with world.engine.connect() as conn:
        loaded = population_store.load(conn, NOW, settings.load)
    pop = loaded.population
    row = int(np.searchsorted(pop.user_ids, user))
    assert pop.max_distance_km[row] == 100.0
    assert np.isnan(pop.lat[row]) and not pop.has_location[row]
    assert loaded.skipped["unknown_interest"] == 1
    assert 987654 not in pop.interest_ids.tolist()
    assert pop.age.dtype == np.float32 and np.nanmin(pop.age) >= 18


def test_rating_signals_come_from_the_ratings_job_not_the_raw_ratings(world: Any) -> None:
    """Regression (issue 10): the match load regrouped the whole ``ratings`` table on every
    load, nightly and every event, to rebuild the shrunk means the ratings job had already
    written. It now reads the ratings job's ``profile_rating_standing`` and preferences: raw
    ratings changed since that job ran move nothing, and without its rows (a ratings job that
    never ran) the rating signals are neutral."""
    config = make_config()
    before = loaded_population(world, config)
    with world.engine.begin() as conn:
        standing = signals.read(conn, schema.profile_rating_standing)
        conn.execute(sa.delete(schema.ratings))
    after = loaded_population(world, config)
    for name in ("rating_quality", "has_rating_quality", "rating_dims", "has_preference"):
        np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)

    rows = pd.Index(before.user_ids).get_indexer(standing["profile_id"].to_numpy())
    quality = standing["quality"].to_numpy(dtype=np.float64)[rows >= 0]
    rows = rows[rows >= 0]
    assert rows.size > 0 and int(before.has_rating_quality.sum()) == rows.size
    np.testing.assert_array_equal(before.rating_quality[rows], quality.astype(np.float32))

    with world.engine.begin() as conn:
        conn.execute(sa.delete(schema.profile_rating_standing))
        conn.execute(sa.delete(schema.user_rating_preferences))
    run_job(world, config)
    written = stored(world)
    neutral = config.signals.neutral_value
    assert len(written) > 0
    assert (written["s_rating_quality"] == neutral).all()
    assert (written["s_rating_fit"] == neutral).all()


def test_score_user_command_runs_in_process_without_reverse(
    world: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs import cli

    # The CLI scores with the default config: the nightly must have scored v1 the same way
    # (Ray settings are operational, so in-process shards keep the default scoring hash).
    default = config_mod.load_config()
    run_job(
        world,
        config_mod.from_mapping(
            {**default.model_dump(), "ray": {**default.ray.model_dump(), "enabled": False}}
        ),
    )
    user = int(stored(world)["user_id"].iloc[0])
    code = cli.main(["--db", world.url, "score-user", str(user), "--no-reverse", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["extra"]["reverse_user_ids"] == [] and out["users"] == 1
    code = cli.main(["--db", world.url, "score-user", str(user)])
    assert code == 0
    assert f"user {user} and " in capsys.readouterr().out


def test_dimension_weights_reweigh_the_quality_the_match_job_scores(world: Any) -> None:
    """ratings.dimension_weights: the loaded rating_quality is the stored standing's mean
    under those weights (one dimension alone: its standing), everything else as before; a
    weight naming no dimension stops the run before any row is written."""
    with world.engine.connect() as conn:
        dims = conn.execute(sa.text("SELECT id, name FROM rating_dimensions ORDER BY id")).all()
        g = conn.execute(sa.text("SELECT count(*) FROM profile_rating_standing")).scalar_one()
    assert len(dims) >= 2 and g > 0
    alike = loaded_population(world, make_config())
    one = loaded_population(world, make_config(ratings={"dimension_weights": {dims[0][1]: 2.0}}))
    assert np.array_equal(one.user_ids, alike.user_ids)
    has = alike.has_rating_quality
    # Standing of dimension 0 = mean standing - mean centred + centred_0 (as stored, float32).
    centred = alike.rating_dims.astype(np.float64)
    want = alike.rating_quality - centred.mean(axis=1) + centred[:, 0]
    assert np.allclose(one.rating_quality[has], want[has], atol=1e-5)
    assert not np.allclose(one.rating_quality[has], alike.rating_quality[has])
    assert np.array_equal(one.rating_dims, alike.rating_dims)
    assert np.array_equal(one.quiz_vectors, alike.quiz_vectors)

    bad = make_config(ratings={"dimension_weights": {"no such dimension": 1.0}})
    with pytest.raises(ConfigError, match="no such dimension"):
        run_job(world, bad)
    assert stored(world).empty
