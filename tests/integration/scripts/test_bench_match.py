"""scripts/bench_match.py keeps working: a small run (seed, nightly on Ray, floor, single user)."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import pytest

pytestmark = pytest.mark.postgres


@pytest.mark.slow
@pytest.mark.ray
def test_a_small_run_prints_the_nightly_the_floor_and_the_single_user_figures(
    script: Callable[[str], ModuleType],
    admin_url: str,
    scratch_db_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = script("bench_match")
    db_name = scratch_db_name("mj_test_bench_match")
    argv = [
        "--users", "1000", "--runs", "1", "--warm-users", "3", "--exhaustive-users", "5",
        "--db-name", db_name, "--admin-url", admin_url, "--no-write",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    section = text[text.index("## Match job") :]
    seconds = r"\*\*[\d.]+ s\*\*"
    assert re.search(
        r"\| \*\*nightly end to end\*\* \(`job_runs` duration\) \| " + seconds, section
    )
    assert re.search(r"\| \*\*write floor\*\*: .* \| " + seconds, section)
    assert re.search(r"\| single user, cold `matchjobs score-user` CLI \| [\d.]+ s \|", section)
    assert re.search(r"\| output \| [\d,]+ rows", section)
    assert re.search(r"load average [\d.]+ at start", section)
