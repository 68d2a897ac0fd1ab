"""The synthetic population: deterministic, structured like real data, written on both engines."""

from __future__ import annotations

import datetime as dt
import json

import factories
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from compute import geo
from jobs import cli
from jobs.errors import DatabaseNotEmptyError
from jobs.storage import bulk, schema, source
from jobs.tools import seed, seed_catalogues

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def population() -> tuple[dict[str, pd.DataFrame], seed.Latent]:
    return seed.generate_with_latent(3000, 11, NOW)


# ------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_frames() -> None:
    first = seed.generate(400, 5, NOW)
    second = seed.generate(400, 5, NOW)
    assert list(first) == [t.name for t in schema.SOURCE_TABLES]
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True)


def test_different_seed_gives_different_rows() -> None:
    first = seed.generate(400, 5, NOW)
    other = seed.generate(400, 6, NOW)
    assert not first["users"].equals(other["users"])
    assert not first["quiz_answers"].equals(other["quiz_answers"])
    assert not first["likes"].equals(other["likes"])


def test_frames_match_the_schema_columns() -> None:
    frames = seed.generate(200, 1, NOW)
    tables = {t.name: t for t in schema.SOURCE_TABLES}
    for name, frame in frames.items():
        assert list(frame.columns) == [c.name for c in tables[name].columns], name


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        seed.generate(10, 1, dt.datetime(2026, 11, 1))


# ------------------------------------------------------------------------ structure


def test_answers_correlate_within_latent_type(population: tuple) -> None:
    frames, latent = population
    answers = frames["quiz_answers"]
    matrix = answers.pivot(index="user_id", columns="question_id", values="value")
    matrix = matrix[matrix.notna().sum(axis=1) >= 20].fillna(matrix.mean())
    rows = matrix.to_numpy()
    rows = rows - rows.mean(axis=1, keepdims=True)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True) + 1e-9
    types = latent.user_types[matrix.index.to_numpy() - 1]
    sample = rows[:800]
    corr = sample @ sample.T
    same = types[:800, None] == types[None, :800]
    off_diagonal = ~np.eye(len(sample), dtype=bool)
    within = corr[same & off_diagonal].mean()
    across = corr[~same].mean()
    assert within > across + 0.25, (within, across)


@pytest.mark.parametrize("cities", seed.CITY_LAYOUTS)
def test_users_cluster_around_city_centres(cities: str) -> None:
    users = seed.generate(3000, 11, NOW, cities)["users"]
    layout = seed.city_layout(cities, 3000)
    located = users[users["latitude"].notna()]
    place = pd.Series(np.arange(layout.n_places), index=list(layout.names))
    rows = place.reindex(located["city"]).to_numpy()
    assert not np.isnan(rows).any()  # every city name is one of the layout's places
    rows = rows.astype(np.int64)
    distance = geo.haversine_km(
        located["latitude"].to_numpy(),
        located["longitude"].to_numpy(),
        layout.lat[rows],
        layout.lon[rows],
    )
    assert (distance <= layout.jitter_km[rows] + 0.1).all()
    assert layout.jitter_km.max() <= seed_catalogues.CITY_JITTER_KM
    assert np.median(distance) < 8.0
    # Zipf city sizes: the biggest city is several times the median one.
    sizes = users["city"].value_counts()
    assert sizes.iloc[0] > 4 * sizes.median()
    assert 0.015 < users["latitude"].isna().mean() < 0.05


@pytest.mark.parametrize(
    ("cities", "places", "biggest"),
    [("realistic", (1000, 1000), (0.05, 0.10)), ("dense", (20, 20), (0.20, 0.28))],
)
def test_city_sizes_are_heavy_tailed(
    cities: str, places: tuple[int, int], biggest: tuple[float, float]
) -> None:
    _, latent = seed.generate_with_latent(50_000, 2, NOW, cities)
    layout = seed.city_layout(cities, 50_000)
    assert places[0] <= layout.n_places <= places[1]
    assert len(set(layout.names)) == layout.n_places
    share = np.bincount(latent.home_city, minlength=layout.n_places) / latent.home_city.size
    assert biggest[0] < share.max() < biggest[1]
    assert share.argmax() == 0  # biggest first
    assert np.isclose(layout.shares.sum(), 1.0)
    assert seed.city_layout(cities, 1_000_000).n_places == layout.n_places
    if cities == "realistic":
        # Heavy tail: the ten biggest hold a minority, and most places are small towns.
        assert np.sort(share)[-10:].sum() < 0.32
        assert (layout.shares < 0.001).mean() > 0.5
        # Towns lie near their region's metro (they meet its people).
        metro = layout.region
        distance = geo.haversine_km(layout.lat, layout.lon, layout.lat[metro], layout.lon[metro])
        lo, hi = seed_catalogues.TOWN_DISTANCE_KM
        towns = metro != np.arange(layout.n_places)
        assert (distance[towns] >= lo - 1).all() and (distance[towns] <= hi + 1).all()


def test_a_small_population_lives_in_the_biggest_places() -> None:
    small, large = seed.city_layout("realistic", 200), seed.city_layout("realistic", 10_000)
    assert small.n_places == seed_catalogues.MIN_PLACES and large.n_places == 200
    assert large.names[: small.n_places] == small.names
    np.testing.assert_array_equal(large.lat[: small.n_places], small.lat)


def test_layouts_are_shared_by_seeds_and_named() -> None:
    first = seed.generate(5000, 1, NOW)["users"]
    dense = seed.generate(300, 1, NOW, "dense")["users"]
    assert set(dense["city"].dropna()) <= {c[0] for c in seed_catalogues.CITIES}
    assert not set(first["city"].dropna()) <= {c[0] for c in seed_catalogues.CITIES}
    assert seed.city_layout("realistic", 300) is seed.city_layout("realistic", 300)
    with pytest.raises(ValueError, match="cities must be one of"):
        seed.generate(10, 1, NOW, "sparse")


def test_population_shares(population: tuple) -> None:
    frames, _ = population
    users = frames["users"]
    assert 0.05 < (~users["is_active"]).mean() < 0.11
    assert 0.015 < (users["gender"] == 2).mean() < 0.05
    age_days = (pd.Timestamp(NOW).tz_localize(None) - users["birth_date"]).dt.days
    ages = age_days / 365.25
    assert ages.min() >= 18 and ages.max() < 71
    assert ((ages >= 22) & (ages <= 40)).mean() > 0.6
    assert (users["age_min"] <= users["age_max"]).all()
    straight = ((users["gender"] == 0) & (users["seeking_mask"] == 2)) | (
        (users["gender"] == 1) & (users["seeking_mask"] == 1)
    )
    assert 0.75 < straight.mean() < 0.95
    assert users["max_distance_km"].isna().any()
    assert (users["created_at"] >= pd.Timestamp(NOW) - pd.Timedelta(days=3)).any()
    assert (users["last_active_at"] >= users["created_at"]).all()
    assert (users["last_active_at"] <= pd.Timestamp(NOW)).all()


def test_quiz_and_interest_shapes(population: tuple) -> None:
    frames, _ = population
    n_users = len(frames["users"])
    questions = frames["quiz_questions"]
    assert (~questions["is_active"]).sum() in (1, 2)
    assert (questions["weight"] != 1.0).any()
    per_user = (
        frames["quiz_answers"]
        .groupby("user_id")
        .size()
        .reindex(frames["users"]["id"], fill_value=0)
    )
    assert 0.01 < (per_user < 5).mean() < 0.06
    assert frames["quiz_answers"]["value"].between(1, 5).all()

    chosen = frames["user_interests"]
    counts = chosen.groupby("user_id").size()
    assert len(counts) == n_users and counts.min() >= 3 and counts.max() <= 15
    weights = chosen["weight"]
    assert weights.isna().any() and weights.dropna().between(1, 10).all()
    popularity = chosen["interest_id"].value_counts()
    assert popularity.iloc[0] > 4 * popularity.median()  # skewed, so IDF matters
    assert {"hiking", "jazz", "sushi"} <= set(frames["interests"]["name"])


def test_ratings_scale_and_rater_bias(population: tuple) -> None:
    frames, latent = population
    ratings = frames["ratings"]
    assert ratings["value"].between(1, 10).all()
    assert set(ratings["dimension_id"]) == {d[0] for d in source.RATING_DIMENSIONS}
    assert not ratings.duplicated(["rater_id", "rated_id", "dimension_id"]).any()
    # Generous raters (positive bias) give higher ratings than harsh ones.
    mean_given = ratings.groupby("rater_id")["value"].mean()
    bias = latent.rater_bias[mean_given.index.to_numpy() - 1]
    assert np.corrcoef(bias, mean_given.to_numpy())[0, 1] > 0.3
    # Profiles' latent attractiveness shows in their attractive ratings.
    attractive = ratings[ratings["dimension_id"] == 1].groupby("rated_id")["value"].mean()
    quality = latent.quality[attractive.index.to_numpy() - 1, 0]
    assert np.corrcoef(quality, attractive.to_numpy())[0, 1] > 0.3


def test_likes_follow_compatibility(population: tuple) -> None:
    frames, latent = population
    likes = frames["likes"]
    assert set(likes["kind"]) == {"like", "pass", "block"}
    assert (likes["kind"] == "block").mean() < 0.03
    assert (likes["user_id"] != likes["target_id"]).all()
    assert not likes.duplicated(["user_id", "target_id"]).any()
    u = likes["user_id"].to_numpy() - 1
    t = likes["target_id"].to_numpy() - 1
    liked = (likes["kind"] == "like").to_numpy()
    same_type = latent.user_types[u] == latent.user_types[t]
    assert liked[same_type].mean() > liked[~same_type].mean() + 0.2
    appeal = np.einsum("ij,ij->i", latent.taste[u], latent.quality[t])
    top = appeal > np.quantile(appeal, 0.75)
    bottom = appeal < np.quantile(appeal, 0.25)
    assert liked[top].mean() > liked[bottom].mean() + 0.1
    # Mostly between people who would pass each other's gender filter.
    users = frames["users"].set_index("id")
    seeks = users["seeking_mask"].to_numpy()
    gender = users["gender"].to_numpy()
    mutual_gender = ((seeks[u] >> gender[t]) & 1) & ((seeks[t] >> gender[u]) & 1)
    assert mutual_gender.mean() > 0.9
    # Mutual likes exist (the feed job needs matches).
    pairs = set(zip(u[liked], t[liked], strict=True))
    assert any((b, a) in pairs for a, b in pairs)


def test_like_probability_formula() -> None:
    zeros = np.zeros(3)
    p = seed.like_probability(np.array([-1.0, 0.0, 1.0]), zeros, zeros, zeros)
    assert np.all(np.diff(p) > 0)
    expected = 1 / (1 + np.exp(-(seed.LIKE_BASE + seed.LIKE_AFFINITY)))
    assert p[2] == pytest.approx(expected)
    far = seed.like_probability(zeros, zeros, zeros, np.array([0.0, 50.0, np.nan]))
    assert far[1] < far[0] == far[2]
    assert np.all(seed.block_probability(p) + p <= 1.0)


@pytest.mark.parametrize(("cities", "n_small"), [("dense", 1000), ("realistic", 4000)])
def test_volume_is_proportional(cities: str, n_small: int) -> None:
    # The realistic layout's 1,000 places are too sparse at 1,000 users for people to meet
    # in proportion (most towns hold nobody to meet), so it is measured from 4,000.
    small = seed.generate(n_small, 3, NOW, cities)
    large = seed.generate(4 * n_small, 3, NOW, cities)
    for name in ("quiz_answers", "user_interests", "ratings", "likes"):
        ratio = len(large[name]) / len(small[name])
        assert 3.0 < ratio < 5.5, (name, ratio)


# ------------------------------------------------------------------------ chunks


def test_a_population_within_one_chunk_is_drawn_as_before_chunking() -> None:
    # The figures of every test seeding at most CHUNK_USERS users were measured on the
    # unchunked draw; one chunk per step draws the same rows.
    whole = seed.generate(600, 5, NOW, chunk_users=600)
    default = seed.generate(600, 5, NOW)
    for name in whole:
        pd.testing.assert_frame_equal(whole[name], default[name], check_exact=True)


def test_chunks_hold_whole_regions_and_every_row_once() -> None:
    n_users = 3000
    chunked, latent = seed.generate_with_latent(n_users, 11, NOW, chunk_users=700)
    again = seed.generate(n_users, 11, NOW, chunk_users=700)
    for name in chunked:  # deterministic for a given chunk size
        pd.testing.assert_frame_equal(chunked[name], again[name], check_exact=True)
    assert chunked["users"]["id"].tolist() == list(range(1, n_users + 1))
    for name, key in (
        ("quiz_answers", ["user_id", "question_id"]),
        ("user_interests", ["user_id", "interest_id"]),
        ("likes", ["user_id", "target_id"]),
        ("ratings", ["rater_id", "rated_id", "dimension_id"]),
    ):
        assert not chunked[name].duplicated(key).any(), name
    region = seed.city_layout("realistic", n_users).region[latent.home_city]
    likes = chunked["likes"]
    assert (region[likes["user_id"] - 1] == region[likes["target_id"] - 1]).all()
    liked = set(zip(likes["user_id"], likes["target_id"], strict=True))
    ratings = chunked["ratings"]
    assert set(zip(ratings["rater_id"], ratings["rated_id"], strict=True)) <= liked
    # Mutual likes cross no chunk boundary, so chunking keeps them.
    kinds = likes.set_index(["user_id", "target_id"])["kind"]
    pairs = kinds[kinds == "like"].index
    mutual = sum((t, u) in pairs for u, t in pairs)
    assert mutual > 0.05 * len(pairs)
    # The same model whatever the chunk size: volumes within a few per cent.
    whole = seed.generate(n_users, 11, NOW)
    for name in ("quiz_answers", "user_interests", "likes", "ratings"):
        ratio = len(chunked[name]) / len(whole[name])
        assert 0.9 < ratio < 1.1, (name, ratio)


def test_generate_chunks_yields_each_step_in_write_order() -> None:
    chunks = list(seed.generate_chunks(900, 2, NOW, chunk_users=400))
    steps = [c.step for c in chunks]
    assert steps[:7] == ["catalogues"] + ["users and quiz"] * 3 + ["interests"] * 3
    assert set(steps[7:]) == {"likes and ratings"}
    assert sum(c.users for c in chunks if c.step == "users and quiz") == 900
    assert sum(c.users for c in chunks if c.step == "likes and ratings") == 900


# ------------------------------------------------------------------------ database


def _read(conn: sa.Connection, table: sa.Table) -> pd.DataFrame:
    pk = list(table.primary_key.columns)
    return bulk.read_frame(conn, sa.select(table).order_by(*pk))


def _assert_same(stored: pd.DataFrame, generated: pd.DataFrame, table: sa.Table) -> None:
    pk = [c.name for c in table.primary_key.columns]
    generated = generated.sort_values(pk).reset_index(drop=True)
    assert len(stored) == len(generated)
    for column in table.columns:
        got, want = stored[column.name], generated[column.name]
        if isinstance(column.type, schema.UTCDateTime):
            assert (pd.to_datetime(got, utc=True) == pd.to_datetime(want, utc=True)).all()
        elif isinstance(column.type, sa.Date):
            assert (pd.to_datetime(got) == pd.to_datetime(want)).all()
        elif isinstance(column.type, sa.Float):
            np.testing.assert_array_equal(got.to_numpy(float), want.to_numpy(float))
        else:
            assert (
                got.astype(object).where(got.notna(), None).tolist()
                == want.astype(object).where(want.notna(), None).tolist()
            ), column.name


def test_seed_writes_identical_rows_on_both_engines(db) -> None:
    frames = seed.generate(250, 9, NOW)
    result = seed.seed(db.engine, n_users=250, seed=9, now=NOW)
    assert result.rows == {name: len(frame) for name, frame in frames.items()}
    with db.engine.connect() as conn:
        assert factories.count_source_rows(conn) == result.rows
        for table in schema.SOURCE_TABLES:
            _assert_same(_read(conn, table), frames[table.name], table)


def test_seed_refuses_a_populated_database_unless_replace(db) -> None:
    seed.seed(db.engine, n_users=60, seed=1, now=NOW)
    with pytest.raises(DatabaseNotEmptyError, match="already has 60 users"):
        seed.seed(db.engine, n_users=60, seed=2, now=NOW)
    result = seed.seed(db.engine, n_users=80, seed=2, now=NOW, replace=True)
    assert result.deleted["users"] == 60
    with db.engine.connect() as conn:
        assert factories.count_source_rows(conn) == result.rows
        assert source.count_users(conn) == 80


def test_seed_in_chunks_writes_the_generated_rows(db) -> None:
    frames = seed.generate(900, 4, NOW, chunk_users=250)
    result = seed.seed(db.engine, n_users=900, seed=4, now=NOW, chunk_users=250)
    assert result.chunks >= 1 + 2 * 4 + 1  # catalogues, users+quiz, interests, likes+ratings
    assert result.rows == {name: len(frame) for name, frame in frames.items()}
    assert set(result.table_write_seconds) == set(result.rows)
    with db.engine.connect() as conn:
        for table in schema.SOURCE_TABLES:
            _assert_same(_read(conn, table), frames[table.name], table)


def test_a_seed_failing_in_a_later_chunk_writes_nothing(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Users and quiz answers are written in the first chunks; the failure comes when the
    # ratings are drawn, at the end: the one transaction leaves the database as it was.
    def fail(*_args: object) -> pd.DataFrame:
        raise RuntimeError("drawing ratings failed")

    monkeypatch.setattr(seed, "_ratings", fail)
    with pytest.raises(RuntimeError, match="drawing ratings failed"):
        seed.seed(db.engine, n_users=300, seed=1, now=NOW, chunk_users=100)
    with db.engine.connect() as conn:
        assert factories.count_source_rows(conn) == dict.fromkeys(source.WRITE_ORDER, 0)


def test_cli_seed_json(db, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["seed", "--users", "40", "--seed", "4", "--cities", "dense", "--db", db.url, "--json"]
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"]["users"] == 40 and data["seed"] == 4 and data["cities"] == "dense"
    with db.engine.connect() as conn:
        cities = set(conn.exec_driver_sql("SELECT city FROM users").scalars()) - {None}
    assert cities <= {c[0] for c in seed_catalogues.CITIES}
    assert cli.main(["seed", "--users", "40", "--seed", "4", "--db", db.url]) == 1
    assert "--replace" in capsys.readouterr().err


def test_timestamps_respect_each_users_history(population: tuple) -> None:
    frames, _ = population
    users = frames["users"].set_index("id")
    answers = frames["quiz_answers"]
    created = users["created_at"].reindex(answers["user_id"]).to_numpy()
    active = users["last_active_at"].reindex(answers["user_id"]).to_numpy()
    answered = answers["answered_at"].to_numpy()
    assert (answered >= created).all() and (answered <= active).all()
    likes = frames["likes"]
    acted = likes["created_at"].to_numpy()
    for column in ("user_id", "target_id"):
        assert (acted >= users["created_at"].reindex(likes[column]).to_numpy()).all()
    assert (acted <= users["last_active_at"].reindex(likes["user_id"]).to_numpy()).all()
