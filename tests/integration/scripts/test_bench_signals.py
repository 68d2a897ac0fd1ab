"""scripts/bench_signals.py keeps working: a small run of every signal job, printed only."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import pytest

pytestmark = pytest.mark.postgres


@pytest.mark.slow
def test_a_small_run_has_batch_and_single_rows_per_job(
    script: Callable[[str], ModuleType],
    admin_url: str,
    scratch_db_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = script("bench_signals")
    argv = [
        "--users", "400", "--runs", "2", "--single", "2", "--admin-url", admin_url,
        "--db-name", scratch_db_name("mj_test_bench_signals"), "--no-write",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("## Signal jobs")
    for job in bench.JOBS:
        batch = [line for line in text.splitlines() if line.startswith(f"| {job} | ")]
        assert len(batch) == 3, (job, batch)  # two batch runs, one single-user row
        for line in batch[:2]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert all(re.fullmatch(r"[\d,]+(\.\d+)?", c) for c in cells[2:9]), cells
