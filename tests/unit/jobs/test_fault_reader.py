"""The fault reader's rules for a bad read (jobs.tools.faults.reader), on reads made by
hand: the thread is never started."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from jobs.tools.faults import reader as reader_mod


class Row(NamedTuple):
    candidate_id: int
    score: float
    computed_at: dt.datetime


OLD = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
NEW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def rows(stamp: dt.datetime, *candidates: int) -> list[Row]:
    return [Row(c, 0.5, stamp) for c in candidates]


def reader(limit: int = 3) -> reader_mod.Reader:
    # The engine connects only when the (unstarted) thread reads: no server is reached.
    return reader_mod.Reader("postgresql+psycopg://postgres@127.0.0.1:5432/test", "v1", [1], limit)


def test_an_untouched_list_that_empties_and_comes_back_is_a_bad_read() -> None:
    r = reader()
    r._judge(1, rows(OLD, 7, 8))
    r._judge(1, [])
    r._judge(1, rows(NEW, 7))
    assert r.bad == {"mixed": 0, "partial": 0, "empty": 1, "errors": 0}


def test_a_list_whose_every_candidate_changed_may_empty() -> None:
    """User 1's whole list is user 2, whose age range the scenario narrowed: the row
    leaves with user 1 untouched, and the next set lists user 1 again."""
    r = reader()
    r._judge(1, rows(OLD, 2))
    r.touch(2)
    r._judge(1, [])
    r._judge(1, rows(NEW, 5))
    assert r.bad["empty"] == 0
    # One untouched candidate in the list: its row had no reason to leave.
    r._judge(1, rows(NEW, 2, 6))
    r._judge(1, [])
    r._judge(1, rows(NEW, 2, 6))
    assert r.bad["empty"] == 1


def test_a_list_read_up_to_the_limit_is_not_known_whole() -> None:
    """A read of ``limit`` rows may hide more rows, untouched ones among them."""
    r = reader(limit=2)
    r._judge(1, rows(OLD, 2, 3))
    r.touch(2, 3)
    r._judge(1, [])
    r._judge(1, rows(NEW, 5))
    assert r.bad["empty"] == 1


def test_mixed_and_partial_reads() -> None:
    r = reader()
    r._judge(1, [*rows(OLD, 7), *rows(NEW, 8)])
    r._judge(1, rows(OLD, 7))
    r._judge(1, rows(OLD, 7, 8))  # a later read of the same set holds more: the first was half
    assert r.bad == {"mixed": 1, "partial": 1, "empty": 0, "errors": 0}
