"""The speed-dating importer: counts match the CSV, hand-checked people, quirks skipped."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import factories
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from jobs import cli
from jobs.errors import DatabaseNotEmptyError, InputDataError
from jobs.storage import bulk, schema
from jobs.tools.importers import speed_dating

RATING_COLUMNS = ["attr", "sinc", "intel", "fun", "amb", "shar"]
ACTIVITY_COLUMNS = [
    "sports",
    "tvsports",
    "exercise",
    "dining",
    "museums",
    "art",
    "hiking",
    "gaming",
    "clubbing",
    "reading",
    "tv",
    "theater",
    "movies",
    "concerts",
    "music",
    "shopping",
    "yoga",
]


@pytest.fixture(scope="module")
def raw(speed_dating_csv: Path) -> pd.DataFrame:
    """The CSV read independently of the importer."""
    return pd.read_csv(speed_dating_csv, encoding="mac_roman", low_memory=False)


@pytest.fixture(scope="module")
def converted(speed_dating_csv: Path) -> speed_dating.Converted:
    return speed_dating.convert(speed_dating.read_csv(speed_dating_csv))


def _interest_id(converted: speed_dating.Converted, name: str) -> int:
    interests = converted.frames["interests"]
    return int(interests.loc[interests["name"] == name, "id"].iloc[0])


# ------------------------------------------------------------------------ counts


def test_counts_match_the_csv(raw: pd.DataFrame, converted: speed_dating.Converted) -> None:
    frames = converted.frames
    assert len(frames["users"]) == raw["iid"].nunique() == 377
    assert frames["users"]["id"].is_unique

    dated = raw[raw["pid"].notna()]
    assert len(frames["likes"]) == dated["dec"].notna().sum()
    assert (frames["likes"]["kind"] == "like").sum() == (dated["dec"] == 1).sum()

    in_scale = sum(int(dated[c].between(1, 10).sum()) for c in RATING_COLUMNS)
    assert len(frames["ratings"]) == in_scale

    people = raw.groupby("iid").first()
    interests_in_scale = sum(int(people[c].between(1, 10).sum()) for c in ACTIVITY_COLUMNS)
    assert len(frames["user_interests"]) == interests_in_scale
    assert len(frames["interests"]) == 17

    assert len(frames["quiz_questions"]) == len(speed_dating.QUESTIONS)
    assert frames["quiz_answers"]["question_id"].isin(frames["quiz_questions"]["id"]).all()


def test_skipped_counts_for_known_quirks(
    raw: pd.DataFrame, converted: speed_dating.Converted
) -> None:
    skipped = converted.skipped
    dated = raw[raw["pid"].notna()]
    # Scorecard ratings of 0 (no 10.5 in waves 1-14: see the synthetic test below).
    zeros = sum(int((dated[c] == 0).sum()) for c in RATING_COLUMNS)
    assert zeros > 0
    assert skipped["rating_out_of_scale"] == zeros
    assert skipped["rating_missing"] == sum(int(dated[c].isna().sum()) for c in RATING_COLUMNS)
    # iid 118 is absent, so rows naming no partner are skipped whole.
    assert skipped["date_row_missing_partner"] == raw["pid"].isna().sum() == 10
    # gaming and reading go above 10.
    people = raw.groupby("iid").first()
    above = sum(int((people[c] > 10).sum()) for c in ACTIVITY_COLUMNS)
    assert skipped["interest_out_of_scale"] == above == 5
    # 7 participants lack the sign-up survey: 17 interests each.
    assert skipped["interest_missing"] == 7 * 17
    assert skipped["user_age_missing"] == people["age"].isna().sum()
    # No imported value is garbage.
    assert converted.frames["ratings"]["value"].between(1, 10).all()
    assert converted.frames["user_interests"]["weight"].between(1, 10).all()


def test_preference_shares_are_normalized(converted: speed_dating.Converted) -> None:
    answers = converted.frames["quiz_answers"]
    shares = answers[answers["question_id"] <= 6].groupby("user_id")["value"]
    assert np.allclose(shares.sum(), 100.0)
    assert (shares.count() == 6).all()


# ------------------------------------------------------------------------ hand-checked people


def test_hand_checked_woman_iid_1(converted: speed_dating.Converted) -> None:
    # CSV: iid 1, wave 1 (2002-10-16), gender 0, age 21, hiking 5, attr1_1 15 (of 100);
    # her row with pid 11 has attr 6, shar 5, dec 1.
    frames = converted.frames
    user = frames["users"].set_index("id").loc[1]
    assert user["gender"] == 0 and user["seeking_mask"] == 2
    assert user["birth_date"].year == 1981
    assert pd.isna(user["latitude"]) and pd.isna(user["max_distance_km"])
    assert user["created_at"] == pd.Timestamp("2002-10-16 23:00", tz="UTC")
    ui = frames["user_interests"]
    hiking = ui[(ui["user_id"] == 1) & (ui["interest_id"] == _interest_id(converted, "hiking"))]
    assert hiking["weight"].tolist() == [5.0]
    ratings = frames["ratings"].set_index(["rater_id", "rated_id", "dimension_id"])["value"]
    assert ratings.loc[(1, 11, 1)] == 6.0
    assert ratings.loc[(1, 11, 6)] == 5.0
    likes = frames["likes"].set_index(["user_id", "target_id"])["kind"]
    assert likes.loc[(1, 11)] == "like"
    answers = frames["quiz_answers"].set_index(["user_id", "question_id"])["value"]
    assert answers.loc[(1, 1)] == pytest.approx(15.0)


def test_hand_checked_man_iid_11(converted: speed_dating.Converted) -> None:
    # CSV: iid 11, wave 1, gender 1, age 27, reading 9; attr1_1 35, amb1_1 0 (sum 100);
    # his row with pid 2 has attr 8, dec 0.
    frames = converted.frames
    user = frames["users"].set_index("id").loc[11]
    assert user["gender"] == 1 and user["seeking_mask"] == 1
    assert user["birth_date"].year == 1975
    ui = frames["user_interests"]
    reading = ui[(ui["user_id"] == 11) & (ui["interest_id"] == _interest_id(converted, "reading"))]
    assert reading["weight"].tolist() == [9.0]
    ratings = frames["ratings"].set_index(["rater_id", "rated_id", "dimension_id"])["value"]
    assert ratings.loc[(11, 2, 1)] == 8.0
    likes = frames["likes"].set_index(["user_id", "target_id"])["kind"]
    assert likes.loc[(11, 2)] == "pass"
    answers = frames["quiz_answers"].set_index(["user_id", "question_id"])["value"]
    assert answers.loc[(11, 1)] == pytest.approx(35.0)
    assert answers.loc[(11, 5)] == 0.0  # a zero share is a real answer
    # goal 1 (a fun night out): one yes among the six goal questions, the first
    goal = {q.id: answers.loc[(11, q.id)] for q in speed_dating.QUESTIONS if q.column == "goal"}
    assert list(goal.values()) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_a_nominal_item_is_one_yes_no_question_per_option(
    converted: speed_dating.Converted, raw: pd.DataFrame
) -> None:
    """goal's codes are labels: each person with a goal answers all six goal questions, yes
    to exactly their own; a person without one answers none, and is counted once."""
    goal_questions = [q for q in speed_dating.QUESTIONS if q.column == "goal"]
    goal_ids = [q.id for q in goal_questions]
    assert len(goal_ids) == 6
    # 0, an option not chosen, is its scale's midpoint: neutral in the quiz vector
    assert all(q.scale_min + q.scale_max == 0 for q in goal_questions)
    answers = converted.frames["quiz_answers"]
    goal = answers[answers["question_id"].isin(goal_ids)]
    per_person = goal.groupby("user_id")["value"]
    assert (per_person.count() == 6).all() and (per_person.sum() == 1.0).all()
    stated = raw.groupby("iid")["goal"].first()
    assert set(per_person.count().index) == set(stated.dropna().index.astype(int))
    chosen = goal[goal["value"] == 1.0].set_index("user_id")["question_id"]
    want = stated.dropna().astype(int).map(lambda g: goal_ids[g - 1])
    assert chosen.sort_index().tolist() == want.sort_index().tolist()
    assert converted.skipped["quiz_missing"] >= int(stated.isna().sum())


def test_out_of_scale_interest_is_skipped_alone(converted: speed_dating.Converted) -> None:
    # CSV: iid 142 rated gaming 14 (scale 1-10) and hiking 6.
    ui = converted.frames["user_interests"]
    mine = ui[ui["user_id"] == 142].set_index("interest_id")["weight"]
    assert _interest_id(converted, "gaming") not in mine.index
    assert mine.loc[_interest_id(converted, "hiking")] == 6.0
    assert len(mine) == 16


# ------------------------------------------------------------------------ synthetic quirks


def test_zero_and_ten_and_a_half_ratings_are_skipped(raw: pd.DataFrame, tmp_path: Path) -> None:
    wave = raw[raw["wave"] == 1].copy()
    first = wave.index[0]
    wave.loc[first, "attr"] = 10.5
    wave.loc[first, "sinc"] = 0.0
    wave.loc[first, "gaming"] = 0.0
    path = tmp_path / "quirks.csv"
    wave.to_csv(path, index=False, lineterminator="\r", encoding="mac_roman")
    baseline = speed_dating.convert(raw[raw["wave"] == 1]).skipped
    result = speed_dating.convert(speed_dating.read_csv(path))
    assert result.skipped["rating_out_of_scale"] == baseline.get("rating_out_of_scale", 0) + 2
    assert result.skipped["interest_out_of_scale"] == baseline.get("interest_out_of_scale", 0) + 1
    rater, rated = int(wave.loc[first, "iid"]), int(wave.loc[first, "pid"])
    ratings = result.frames["ratings"]
    pair = ratings[(ratings["rater_id"] == rater) & (ratings["rated_id"] == rated)]
    assert set(pair["dimension_id"]) == {3, 4, 5, 6}  # attr and sinc skipped, the rest kept


def test_missing_csv_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputDataError, match=r"nope\.csv"):
        speed_dating.read_csv(missing)


def test_csv_without_required_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("iid,wave\r1,1\r")
    with pytest.raises(InputDataError, match="lacks required columns"):
        speed_dating.read_csv(path)


# ------------------------------------------------------------------------ database


def test_import_writes_rows_on_both_engines(
    db, converted: speed_dating.Converted, speed_dating_csv: Path
) -> None:
    result = speed_dating.import_csv(db.engine, speed_dating_csv)
    assert result.rows == {name: len(frame) for name, frame in converted.frames.items()}
    assert result.skipped == converted.skipped
    with db.engine.connect() as conn:
        assert factories.count_source_rows(conn) == result.rows
        ratings = bulk.read_frame(
            conn,
            sa.select(schema.ratings).where(
                schema.ratings.c.rater_id == 1, schema.ratings.c.rated_id == 11
            ),
        )
        users = bulk.read_frame(conn, sa.select(schema.users).where(schema.users.c.id == 11))
    assert ratings.set_index("dimension_id")["value"].loc[1] == 6.0
    assert users["gender"].iloc[0] == 1
    assert users["created_at"].iloc[0] == pd.Timestamp(dt.datetime(2002, 10, 16, 23, tzinfo=dt.UTC))
    assert users["latitude"].isna().all()

    with pytest.raises(DatabaseNotEmptyError, match="already has 377 users"):
        speed_dating.import_csv(db.engine, speed_dating_csv)
    again = speed_dating.import_csv(db.engine, speed_dating_csv, replace=True)
    assert again.rows == result.rows and again.deleted["users"] == 377


def test_cli_import_json(db, capsys: pytest.CaptureFixture[str], speed_dating_csv: Path) -> None:
    argv = ["import", "speed-dating", str(speed_dating_csv), "--db", db.url, "--json"]
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"]["users"] == 377
    assert data["skipped"]["rating_out_of_scale"] > 0
    assert cli.main(["import", "speed-dating", "/no/such/file.csv", "--db", db.url]) == 1
    assert "/no/such/file.csv" in capsys.readouterr().err
