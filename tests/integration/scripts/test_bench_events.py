"""scripts/bench_events.py keeps working: small runs of both worker modes, printed only."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

pytestmark = pytest.mark.postgres


@pytest.mark.slow
@pytest.mark.ray
def test_a_small_run_reports_each_event_kind_in_each_mode(
    script: Callable[[str], ModuleType],
    admin_url: str,
    scratch_db_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = script("bench_events")
    argv = [
        "--users", "400", "--samples", "1", "--sustained", "5", "--storm", "40",
        "--storm-users", "10", "--storm-s", "1", "--workers", "1,2", "--admin-url", admin_url,
        "--db-name", scratch_db_name("mj_test_bench_events"), "--no-write",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    section = text[text.index(bench.SECTION) :]
    for kind in bench.FRESH:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{kind}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 2 + 3 * len(bench.MODES), row
    for mode in bench.MODES:
        for who in (f"{mode}, 1 worker", f"{mode}, 2 workers"):
            assert f"Sustained ({who}): 5 quiz events" in section
            assert f"Storm ({who}): 40 events for 10 users" in section
