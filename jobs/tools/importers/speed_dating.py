"""Import the Fisman & Iyengar speed-dating experiment (``Speed Dating Data.csv``).

One CSV row is one directed date (participant ``iid`` → partner ``pid``). The mapping:

- **users**: one per ``iid`` (per-person columns taken from the person's first non-empty
  value). ``gender`` 0 female → 0 woman, 1 male → 1 man; ``seeking_mask`` is the opposite
  gender (the design paired women with men). ``birth_date`` = wave date − ``age`` years − half
  a year. No location, no distance limit (NULL: the match job treats them as neutral), age
  range 18–99 (the data states none). ``created_at``/``last_active_at`` = the wave's date.
- **quiz_questions / quiz_answers**: the sign-up survey (:data:`QUESTIONS`). The "what I look
  for" block ``attr1_1 … shar1_1`` is normalized per person to shares of 100, because waves
  used different scales; a block with any item missing or out of scale is skipped whole (its
  shares would not be comparable). The nominal ``goal`` item (codes 1–6 are labels) becomes
  six yes/no questions, one per option.
- **subjects / interests / user_interests**: the 17 activity ratings, grouped into five
  subjects, with weight = the 1–10 rating.
- **ratings**: ``attr sinc intel fun amb shar`` of a row are ``iid``'s ratings *of* ``pid``
  (rater = iid, rated = pid), one row per dimension.
- **likes**: ``dec`` of a row: (iid → pid) ``like`` if 1, ``pass`` if 0.

A missing or out-of-scale value is skipped on its own (the person and their other values
stay) and counted under a reason such as ``rating_out_of_scale``. A date row without a
partner (``pid`` missing, or a partner who is not a participant) is skipped whole and
counted once per row. Conversion is deterministic: rows are sorted by key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from jobs.errors import InputDataError
from jobs.storage import migrate, source

logger = logging.getLogger(__name__)

ENCODING = "mac_roman"

# Wave dates from the data key. Times are 23:00 UTC (evening in New York).
WAVE_DATES: dict[int, dt.date] = {
    1: dt.date(2002, 10, 16),
    2: dt.date(2002, 10, 23),
    3: dt.date(2002, 11, 12),
    4: dt.date(2002, 11, 12),
    5: dt.date(2002, 11, 20),
    6: dt.date(2003, 3, 26),
    7: dt.date(2003, 3, 26),
    8: dt.date(2003, 4, 2),
    9: dt.date(2003, 4, 2),
    10: dt.date(2003, 9, 24),
    11: dt.date(2003, 9, 24),
    12: dt.date(2003, 10, 7),
    13: dt.date(2003, 10, 8),
    14: dt.date(2003, 10, 8),
    15: dt.date(2004, 2, 24),
    16: dt.date(2004, 2, 25),
    17: dt.date(2004, 2, 25),
    18: dt.date(2004, 4, 6),
    19: dt.date(2004, 4, 6),
    20: dt.date(2004, 4, 7),
    21: dt.date(2004, 4, 7),
}
EVENT_HOUR_UTC = 23
AGE_RANGE = (18, 99)

PREFERENCE_COLUMNS = ("attr1_1", "sinc1_1", "intel1_1", "fun1_1", "amb1_1", "shar1_1")


@dataclasses.dataclass(frozen=True)
class Question:
    id: int
    column: str
    text: str
    scale_min: float
    scale_max: float
    # A nominal item (``goal``) is one question per option, answered 1 for the chosen
    # option and 0 for the others on a scale of -1 to 1: 0 is the midpoint, which the quiz
    # vector reads as neutral, so a shared choice makes two people alike and the options
    # neither chose count for nothing. Its codes are labels, not amounts: one numeric answer
    # would put "other" (6) next to "to say I did it" (5), far from "a fun night out" (1).
    choice: int | None = None
    codes: tuple[float, float] | None = None  # the column's valid codes (for a choice)


QUESTIONS: tuple[Question, ...] = (
    *(
        Question(i + 1, col, f"What I look for in a partner: {label} (share of 100 points)", 0, 100)
        for i, (col, label) in enumerate(
            zip(
                PREFERENCE_COLUMNS,
                ("attractive", "sincere", "intelligent", "fun", "ambitious", "shared interests"),
                strict=True,
            )
        )
    ),
    Question(7, "attr3_1", "How I see myself: attractive (1-10)", 1, 10),
    Question(8, "sinc3_1", "How I see myself: sincere (1-10)", 1, 10),
    Question(9, "intel3_1", "How I see myself: intelligent (1-10)", 1, 10),
    Question(10, "fun3_1", "How I see myself: fun (1-10)", 1, 10),
    Question(11, "amb3_1", "How I see myself: ambitious (1-10)", 1, 10),
    Question(12, "date", "How often I go on dates (1 several times a week … 7 almost never)", 1, 7),
    Question(13, "go_out", "How often I go out (1 several times a week … 7 almost never)", 1, 7),
    Question(14, "imprace", "Importance of a partner of the same racial background (1-10)", 1, 10),
    Question(15, "imprelig", "Importance of a partner of the same religion (1-10)", 1, 10),
    Question(16, "exphappy", "How happy I expect to be with the people I meet (1-10)", 1, 10),
    *(
        Question(
            17 + i, "goal", f"My primary goal: {label} (1 if chosen, else 0)", -1, 1, i + 1, (1, 6)
        )
        for i, label in enumerate(
            (
                "a fun night out",
                "to meet new people",
                "to get a date",
                "a serious relationship",
                "to say I did it",
                "other",
            )
        )
    ),
)

# subject -> (CSV column, interest name)
ACTIVITIES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "sports & fitness",
        (
            ("sports", "playing sports"),
            ("tvsports", "watching sports"),
            ("exercise", "exercise"),
            ("hiking", "hiking"),
            ("yoga", "yoga"),
        ),
    ),
    (
        "arts & culture",
        (("museums", "museums"), ("art", "art"), ("theater", "theater"), ("reading", "reading")),
    ),
    ("screen & games", (("tv", "tv"), ("movies", "movies"), ("gaming", "gaming"))),
    (
        "music & nightlife",
        (("concerts", "concerts"), ("music", "music"), ("clubbing", "clubbing")),
    ),
    ("food & shopping", (("dining", "dining out"), ("shopping", "shopping"))),
)
INTEREST_SCALE = (1.0, 10.0)

# rating dimension id (see source.RATING_DIMENSIONS) -> scorecard column
RATING_COLUMNS: tuple[tuple[int, str], ...] = (
    (1, "attr"),
    (2, "sinc"),
    (3, "intel"),
    (4, "fun"),
    (5, "amb"),
    (6, "shar"),
)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "iid",
    "id",
    "wave",
    "gender",
    "age",
    "pid",
    "dec",
    *(q.column for q in QUESTIONS),
    *(col for _, pairs in ACTIVITIES for col, _ in pairs),
    *(col for _, col in RATING_COLUMNS),
)


@dataclasses.dataclass(frozen=True)
class Converted:
    frames: dict[str, pd.DataFrame]
    skipped: dict[str, int]


@dataclasses.dataclass(frozen=True)
class ImportResult:
    path: str
    rows: dict[str, int]
    skipped: dict[str, int]
    deleted: dict[str, int]
    seconds: float


# ------------------------------------------------------------------------------ reading


def read_csv(path: Path) -> pd.DataFrame:
    """The CSV as a frame (mac_roman, CR line endings, thousands separators handled)."""
    if not path.is_file():
        raise InputDataError(
            f"speed-dating CSV {str(path)!r} does not exist or is not a file; "
            "expected the path to 'Speed Dating Data.csv'"
        )
    try:
        frame = pd.read_csv(path, encoding=ENCODING, thousands=",", low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputDataError(f"speed-dating CSV {str(path)!r} could not be parsed: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"speed-dating CSV {str(path)!r} lacks required columns {missing}; "
            f"got {len(frame.columns)} columns"
        )
    return frame


# ------------------------------------------------------------------------------ conversion


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(np.float64)


def _wave_timestamps(waves: np.ndarray) -> pd.Series:
    days = np.asarray(
        [np.datetime64(WAVE_DATES[int(w)], "D") for w in waves], dtype="datetime64[D]"
    )
    seconds = days.astype("datetime64[s]") + np.timedelta64(EVENT_HOUR_UTC, "h")
    return pd.Series(seconds.astype("datetime64[s]")).dt.tz_localize("UTC")


def _check_values(
    values: pd.Series, low: float, high: float, reason: str, skipped: Counter[str]
) -> np.ndarray:
    """Keep-mask of values within [low, high]; counts ``<reason>_missing``/``_out_of_scale``."""
    array = values.to_numpy(dtype=np.float64)
    missing = np.isnan(array)
    out = ~missing & ((array < low) | (array > high))
    skipped[f"{reason}_missing"] += int(missing.sum())
    skipped[f"{reason}_out_of_scale"] += int(out.sum())
    return ~missing & ~out


def convert(raw: pd.DataFrame) -> Converted:
    """Source-table frames from the CSV's frame, plus counts of skipped values per reason."""
    skipped: Counter[str] = Counter()
    rows = raw.copy()
    for col in REQUIRED_COLUMNS:
        rows[col] = _numeric(rows[col])
    bad_iid = rows["iid"].isna()
    skipped["date_row_missing_iid"] += int(bad_iid.sum())
    rows = rows[~bad_iid]
    users, people, event_at = _users(rows, skipped)
    iids = users["id"].to_numpy(dtype=np.int64)
    questions, answers = _quiz(people, iids, event_at, skipped)
    subjects, interests, user_interests = _interests(people, iids, event_at, skipped)
    created_by_iid = pd.Series(event_at.to_numpy(), index=iids)
    ratings, likes = _decisions(rows, iids, created_by_iid, skipped)
    frames = source.source_frames(
        users=users,
        quiz_questions=questions,
        quiz_answers=answers,
        subjects=subjects,
        interests=interests,
        user_interests=user_interests,
        ratings=ratings,
        likes=likes,
    )
    return Converted(frames=frames, skipped={k: v for k, v in sorted(skipped.items()) if v})


def _users(
    rows: pd.DataFrame, skipped: Counter[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """``users`` (one per iid with a known gender and wave), the participants' first rows
    (their answers and interests), and each one's event time."""
    people = rows.groupby("iid", sort=True).first()
    iids = people.index.to_numpy(dtype=np.int64)
    gender = people["gender"].to_numpy()
    wave = people["wave"].to_numpy()
    bad_gender = ~np.isin(gender, (0.0, 1.0))
    bad_wave = ~np.isin(wave, np.asarray(list(WAVE_DATES), dtype=np.float64))
    skipped["user_bad_gender"] += int(bad_gender.sum())
    skipped["user_unknown_wave"] += int((bad_wave & ~bad_gender).sum())
    keep_people = ~bad_gender & ~bad_wave
    people = people[keep_people]
    iids, gender, wave = iids[keep_people], gender[keep_people].astype(np.int64), wave[keep_people]
    event_at = _wave_timestamps(wave)

    age = people["age"].to_numpy(dtype=np.float64)
    age_ok = _check_values(people["age"], AGE_RANGE[0], AGE_RANGE[1], "user_age", skipped)
    wave_days = np.asarray(
        [np.datetime64(WAVE_DATES[int(w)], "D") for w in wave], dtype="datetime64[D]"
    )
    birth_offset = np.round(np.nan_to_num(age) * 365.25 + 182.0).astype(np.int64)
    birth = (wave_days - birth_offset.astype("timedelta64[D]")).astype("datetime64[s]")
    birth_date = pd.Series(birth).where(age_ok)
    n = len(iids)
    users = pd.DataFrame(
        {
            "id": iids,
            "birth_date": birth_date,
            "gender": gender,
            "seeking_mask": np.where(gender == 0, 2, 1).astype(np.int64),
            "age_min": np.full(n, AGE_RANGE[0], dtype=np.int64),
            "age_max": np.full(n, AGE_RANGE[1], dtype=np.int64),
            "max_distance_km": np.full(n, np.nan),
            "latitude": np.full(n, np.nan),
            "longitude": np.full(n, np.nan),
            "city": pd.Series([None] * n, dtype=object),
            "created_at": event_at,
            "last_active_at": event_at,
            "is_active": np.ones(n, dtype=bool),
            "display_name": pd.Series(
                [
                    f"Wave {int(w)} participant {int(i)}"
                    if i == i
                    else f"Wave {int(w)} participant"
                    for w, i in zip(wave, people["id"].to_numpy(), strict=True)
                ],
                dtype=object,
            ),
        }
    )
    return users, people, event_at


def _quiz(
    people: pd.DataFrame, iids: np.ndarray, event_at: pd.Series, skipped: Counter[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``quiz_questions`` and ``quiz_answers``: the preference block as shares of 100, the
    other items as given, each value outside its scale skipped and counted."""
    questions = pd.DataFrame(
        {
            "id": np.asarray([q.id for q in QUESTIONS], dtype=np.int64),
            "text": [q.text for q in QUESTIONS],
            "scale_min": np.asarray([q.scale_min for q in QUESTIONS], dtype=np.float64),
            "scale_max": np.asarray([q.scale_max for q in QUESTIONS], dtype=np.float64),
            "weight": np.ones(len(QUESTIONS)),
            "is_active": np.ones(len(QUESTIONS), dtype=bool),
        }
    )
    answer_parts = []
    pref_raw = people[list(PREFERENCE_COLUMNS)].to_numpy(dtype=np.float64)
    pref_missing = np.isnan(pref_raw)
    pref_out = ~pref_missing & ((pref_raw < 0) | (pref_raw > 100))
    totals = np.where(pref_missing | pref_out, 0.0, pref_raw).sum(axis=1)
    block_ok = ~(pref_missing | pref_out).any(axis=1) & (totals > 0)
    skipped["quiz_missing"] += int(pref_missing.sum())
    skipped["quiz_out_of_scale"] += int(pref_out.sum())
    skipped["quiz_incomplete_preference_block"] += int(
        (~block_ok[:, None] & ~pref_missing & ~pref_out).sum()
    )
    shares = 100.0 * pref_raw / np.where(totals > 0, totals, 1.0)[:, None]
    choice_keep: dict[str, np.ndarray] = {}  # a nominal column is checked (and counted) once
    for j, question in enumerate(QUESTIONS):
        if question.column in PREFERENCE_COLUMNS:
            values = shares[:, j]
            keep = block_ok
        elif question.choice is not None:
            assert question.codes is not None
            column = people[question.column]
            if question.column not in choice_keep:
                choice_keep[question.column] = _check_values(
                    column, *question.codes, "quiz", skipped
                )
            keep = choice_keep[question.column]
            values = (column.to_numpy(dtype=np.float64) == question.choice).astype(np.float64)
        else:
            values = people[question.column].to_numpy(dtype=np.float64)
            keep = _check_values(
                people[question.column], question.scale_min, question.scale_max, "quiz", skipped
            )
        answer_parts.append(
            pd.DataFrame(
                {
                    "user_id": iids[keep],
                    "question_id": np.full(int(keep.sum()), question.id, dtype=np.int64),
                    "value": values[keep],
                    "answered_at": event_at[keep].reset_index(drop=True),
                }
            )
        )
    answers = _sorted(pd.concat(answer_parts, ignore_index=True), ["user_id", "question_id"])
    return questions, answers


def _interests(
    people: pd.DataFrame, iids: np.ndarray, event_at: pd.Series, skipped: Counter[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``subjects``, ``interests`` and ``user_interests`` from the activity ratings."""
    subject_rows, interest_rows = [], []
    interest_parts = []
    next_interest = 1
    for subject_id, (subject, pairs) in enumerate(ACTIVITIES, start=1):
        subject_rows.append((subject_id, subject))
        for column, name in pairs:
            interest_rows.append((next_interest, subject_id, name))
            keep = _check_values(
                people[column], INTEREST_SCALE[0], INTEREST_SCALE[1], "interest", skipped
            )
            interest_parts.append(
                pd.DataFrame(
                    {
                        "user_id": iids[keep],
                        "interest_id": np.full(int(keep.sum()), next_interest, dtype=np.int64),
                        "weight": people[column].to_numpy(dtype=np.float64)[keep],
                        "created_at": event_at[keep].reset_index(drop=True),
                    }
                )
            )
            next_interest += 1
    subjects = pd.DataFrame(subject_rows, columns=["id", "name"]).astype({"id": np.int64})
    interests = pd.DataFrame(interest_rows, columns=["id", "subject_id", "name"]).astype(
        {"id": np.int64, "subject_id": np.int64}
    )
    user_interests = _sorted(
        pd.concat(interest_parts, ignore_index=True), ["user_id", "interest_id"]
    )
    return subjects, interests, user_interests


def _decisions(
    rows: pd.DataFrame, iids: np.ndarray, created_by_iid: pd.Series, skipped: Counter[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``ratings`` and ``likes`` from the date rows between known participants, one row per
    ordered pair (the first kept, duplicates counted)."""
    dates = rows[rows["iid"].isin(iids)]
    skipped["date_row_unknown_participant"] += int(len(rows) - len(dates))
    no_partner = dates["pid"].isna()
    skipped["date_row_missing_partner"] += int(no_partner.sum())
    dates = dates[~no_partner]
    unknown = ~dates["pid"].isin(iids)
    skipped["date_row_unknown_partner"] += int(unknown.sum())
    dates = dates[~unknown]
    duplicate = dates.duplicated(["iid", "pid"], keep="first")
    skipped["date_row_duplicate_pair"] += int(duplicate.sum())
    dates = dates[~duplicate].sort_values(["iid", "pid"], kind="stable")
    rater = dates["iid"].to_numpy(dtype=np.int64)
    rated = dates["pid"].to_numpy(dtype=np.int64)
    # Both met at the event: the later of the two sign-up times is the event's.
    met_at = _later(created_by_iid, rater, rated)

    rating_parts = []
    for dimension_id, column in RATING_COLUMNS:
        keep = _check_values(dates[column], 1.0, 10.0, "rating", skipped)
        rating_parts.append(
            pd.DataFrame(
                {
                    "rater_id": rater[keep],
                    "rated_id": rated[keep],
                    "dimension_id": np.full(int(keep.sum()), dimension_id, dtype=np.int64),
                    "value": dates[column].to_numpy(dtype=np.float64)[keep],
                    "created_at": met_at[keep].reset_index(drop=True),
                }
            )
        )
    ratings = _sorted(
        pd.concat(rating_parts, ignore_index=True), ["rater_id", "rated_id", "dimension_id"]
    )

    decision = dates["dec"].to_numpy(dtype=np.float64)
    missing = np.isnan(decision)
    invalid = ~missing & ~np.isin(decision, (0.0, 1.0))
    skipped["like_missing"] += int(missing.sum())
    skipped["like_out_of_scale"] += int(invalid.sum())
    keep = ~missing & ~invalid
    likes = pd.DataFrame(
        {
            "user_id": rater[keep],
            "target_id": rated[keep],
            "kind": np.where(decision[keep] == 1.0, "like", "pass").astype(object),
            "created_at": met_at[keep].reset_index(drop=True),
        }
    )
    return ratings, likes


def _later(created_by_iid: pd.Series, a: np.ndarray, b: np.ndarray) -> pd.Series:
    first = created_by_iid.loc[a].reset_index(drop=True)
    second = created_by_iid.loc[b].reset_index(drop=True)
    return first.where(first >= second, second)


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------ writing


def import_csv(engine: sa.Engine, path: Path, *, replace: bool = False) -> ImportResult:
    """Ensure the schema, convert ``path`` and write it in one transaction.

    Refuses a database that already has users unless ``replace`` (which first deletes every
    source row).
    """
    started = time.perf_counter()
    converted = convert(read_csv(path))
    migrate.upgrade(engine)
    with engine.begin() as conn:
        deleted, rows = source.load_into_empty(
            conn, converted.frames, replace=replace, what="import"
        )
    for reason, count in converted.skipped.items():
        logger.info(
            "skipped %d values: %s",
            count,
            reason,
            extra={"action": "import.skip", "reason": reason, "count": count},
        )
    seconds = time.perf_counter() - started
    logger.info(
        "imported %s: %d rows in %.1fs",
        path,
        sum(rows.values()),
        seconds,
        extra={"action": "import.write", "rows": rows},
    )
    return ImportResult(
        path=str(path), rows=rows, skipped=converted.skipped, deleted=deleted, seconds=seconds
    )
