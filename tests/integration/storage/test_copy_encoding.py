"""The binary COPY encoding of match_scores rows, byte for byte against struct.pack."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pandas as pd

from jobs.storage import scores

NOW = dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)


def reference_encoding(frame: pd.DataFrame, version: str, config_hash: str) -> bytes:
    """One row at a time, field by field: the format as PostgreSQL documents it."""
    micros = int((NOW - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 1_000_000
    out = []
    for row in frame.itertuples(index=False):
        parts = [struct.pack(">h", len(scores.COPY_COLUMNS))]
        parts += [struct.pack(">i", len(version.encode())), version.encode()]
        parts += [struct.pack(">iq", 8, row.user_id), struct.pack(">iq", 8, row.candidate_id)]
        for name in ("score", *scores.SUBSCORE_COLUMNS):
            parts.append(struct.pack(">id", 8, getattr(row, name)))
        parts += [struct.pack(">i", len(config_hash.encode())), config_hash.encode()]
        parts.append(struct.pack(">iq", 8, micros))
        text = row.reasons.encode()
        parts += [struct.pack(">i", len(text)), text]
        out.append(b"".join(parts))
    return b"".join(out)


def score_frame(reasons: list[str], rng: np.random.Generator) -> pd.DataFrame:
    m = len(reasons)
    columns = {
        "user_id": rng.integers(0, 1 << 40, m),
        "candidate_id": rng.integers(0, 1 << 40, m),
        "score": rng.random(m),
        **{name: rng.random(m) for name in scores.SUBSCORE_COLUMNS},
        "reasons": reasons,
    }
    return pd.DataFrame(columns)


def test_rows_with_texts_of_every_length_encode_like_the_reference() -> None:
    rng = np.random.default_rng(3)
    texts = ["[]", '[{"code": "nearby", "params": {"km": 5}, "text": "About 5 km away"}]']
    texts.append('[{"code": "shared_interests", "text": "You both love café and ñandú"}]')
    reasons = [texts[i] for i in rng.integers(0, len(texts), 500)]
    frame = score_frame(reasons, rng)
    encoded = scores.encode_copy_binary(frame, "v-ä", "0123456789abcdef", NOW)
    assert encoded == reference_encoding(frame, "v-ä", "0123456789abcdef")


def test_a_single_row_and_no_rows() -> None:
    rng = np.random.default_rng(4)
    one = score_frame(["[]"], rng)
    assert scores.encode_copy_binary(one, "v1", "h", NOW) == reference_encoding(one, "v1", "h")
    assert scores.encode_copy_binary(one.iloc[:0], "v1", "h", NOW) == b""
