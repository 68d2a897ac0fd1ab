"""The binary COPY encoding of match_scores rows, byte for byte against struct.pack, and the
reasons patterns the rows point to."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from jobs.errors import StorageError
from jobs.storage import api, scores

NOW = dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)


def reference_encoding(frame: pd.DataFrame, version: str) -> bytes:
    """One row at a time, field by field: the format as PostgreSQL documents it."""
    micros = int((NOW - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 1_000_000
    out = []
    for row in frame.itertuples(index=False):
        parts = [struct.pack(">h", len(scores.COPY_COLUMNS))]
        parts += [struct.pack(">iq", 8, row.user_id), struct.pack(">iq", 8, row.candidate_id)]
        parts.append(struct.pack(">iq", 8, scores.reason_id(row.reasons)))
        parts.append(struct.pack(">iq", 8, micros))
        for name in ("score", *scores.SUBSCORE_COLUMNS):
            parts.append(struct.pack(">if", 4, getattr(row, name)))
        parts += [struct.pack(">i", len(version.encode())), version.encode()]
        out.append(b"".join(parts))
    return b"".join(out)


def score_frame(reasons: list[str], rng: np.random.Generator) -> pd.DataFrame:
    m = len(reasons)
    columns = {
        "user_id": rng.integers(0, 1 << 40, m),
        "candidate_id": rng.integers(0, 1 << 40, m),
        # The scorer's values: float32, widened to float64 in the frame.
        "score": rng.random(m, dtype=np.float32).astype(np.float64),
        **{
            name: rng.random(m, dtype=np.float32).astype(np.float64)
            for name in scores.SUBSCORE_COLUMNS
        },
        "reasons": reasons,
    }
    return pd.DataFrame(columns)


def encode(frame: pd.DataFrame, version: str) -> bytes:
    ids = scores.reason_patterns(frame["reasons"]).row_ids
    return scores.encode_copy_binary(frame, ids, version, NOW)


TEXTS = [
    "[]",
    '[{"code": "nearby", "params": {"km": 5}, "text": "About 5 km away"}]',
    '[{"code": "shared_interests", "text": "You both love café and ñandú"}]',
]


def test_rows_with_texts_of_every_length_encode_like_the_reference() -> None:
    rng = np.random.default_rng(3)
    reasons = [TEXTS[i] for i in rng.integers(0, len(TEXTS), 500)]
    frame = score_frame(reasons, rng)
    assert encode(frame, "v-ä") == reference_encoding(frame, "v-ä")
    chunks = b"".join(scores.encode_chunks(frame, "v-ä", NOW))
    assert chunks == reference_encoding(frame, "v-ä")


def test_a_single_row_and_no_rows() -> None:
    rng = np.random.default_rng(4)
    one = score_frame(["[]"], rng)
    assert encode(one, "v1") == reference_encoding(one, "v1")
    assert encode(one.iloc[:0], "v1") == b""


def test_patterns_are_digested_once_each() -> None:
    patterns = scores.reason_patterns(pd.Series([TEXTS[1], TEXTS[0], TEXTS[1]]))
    assert patterns.texts == [TEXTS[1], TEXTS[0]]
    assert patterns.ids.tolist() == [scores.reason_id(TEXTS[1]), scores.reason_id(TEXTS[0])]
    assert patterns.row_ids.tolist() == [patterns.ids[0], patterns.ids[1], patterns.ids[0]]


def test_rows_read_back_as_written_on_both_engines(db) -> None:
    """What the API reads equals what the scorer wrote: reasons text for text, scores as
    the float32 values widened to float64, in one ordered query."""
    rng = np.random.default_rng(5)
    frame = score_frame([TEXTS[i % 3] for i in range(40)], rng).assign(user_id=7)
    frame["candidate_id"] = np.arange(40)
    with db.engine.begin() as conn:
        assert scores.insert_rows(conn, frame, version="v1", computed_at=NOW) == 40
        # A second writer of the same patterns adds none.
        scores.insert_rows(conn, frame.assign(user_id=8), version="v1", computed_at=NOW)
    with db.engine.connect() as conn:
        served = api.suggestions(conn, "v1", 7, 100)
        n_patterns = conn.execute(sa.text("SELECT count(*) FROM reason_patterns")).scalar_one()
        stored = scores.read_rows(conn, "v1", [7])
    expected = frame.sort_values(["score", "candidate_id"], ascending=[False, True])
    assert served["candidate_id"].tolist() == expected["candidate_id"].tolist()
    assert served["reasons"].tolist() == expected["reasons"].tolist()
    for name in ("score", *scores.SUBSCORE_COLUMNS):
        assert served[name].tolist() == expected[name].tolist(), name
        assert stored[name].tolist() == expected[name].tolist(), name
    assert stored["reasons"].tolist() == expected["reasons"].tolist()
    assert n_patterns == 3


def test_a_digest_collision_is_refused(db) -> None:
    """A stored pattern whose text differs from ours under the same id is never served as
    ours: the write fails and nothing is written."""
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(scores.PATTERNS).values(id=scores.reason_id(TEXTS[1]), reasons="other")
        )
    rng = np.random.default_rng(6)
    frame = score_frame([TEXTS[1]], rng)
    with pytest.raises(StorageError, match="share a 64-bit id"), db.engine.begin() as conn:
        scores.insert_rows(conn, frame, version="v1", computed_at=NOW)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM match_scores")).scalar_one() == 0
