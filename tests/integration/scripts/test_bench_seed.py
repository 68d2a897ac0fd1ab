"""scripts/bench_seed.py keeps working: a small run in its child processes, printed only."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import pytest

pytestmark = pytest.mark.postgres


@pytest.fixture
def bench(script: Callable[[str], ModuleType]) -> ModuleType:
    return script("bench_seed")


@pytest.mark.slow
def test_a_small_run_prints_every_table_and_the_peak_rss(
    bench: ModuleType,
    admin_url: str,
    scratch_db_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    db_name = scratch_db_name("mj_test_bench_seed")
    argv = ["--users", "3000", "--runs", "2", "--admin-url", admin_url, "--db-name", db_name]
    assert bench.main([*argv, "--no-write"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("## Seed")
    assert re.search(r"\*\*peak RSS [\d,]+ MB\*\* \(per run: [\d,]+, [\d,]+ MB\)", text)
    assert re.search(r"load average at start \d+\.\d\d", text)
    rows = {
        cells[0]: cells
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| table")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == set(bench.source.WRITE_ORDER)
    assert rows["users"][1] == "3,000"
    assert int(rows["quiz_answers"][1].replace(",", "")) > 20 * 3000
