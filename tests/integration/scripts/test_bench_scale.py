"""scripts/bench_scale.py keeps working: a small run end to end, and a run whose phase fails."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa

from jobs.storage import engine as engine_mod

NUMBER = r"[\d,]+(\.\d+)?"

pytestmark = pytest.mark.postgres


@pytest.fixture
def bench(script: Callable[[str], ModuleType]) -> ModuleType:
    return script("bench_scale")


def _rows(text: str) -> dict[str, list[str]]:
    table = text[text.index("| phase |") :].split("\n\n")[0]
    return {
        cells[0]: cells
        for line in table.splitlines()[2:]
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def _scratch_database_is_gone(admin_url: str, err: str) -> None:
    name = re.search(r"scratch database (\S+)", err)
    assert name, err
    admin = engine_mod.create_engine(admin_url)
    with admin.connect() as conn:
        names = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    admin.dispose()
    assert name.group(1) not in names


@pytest.mark.slow
@pytest.mark.ray
def test_a_small_run_names_every_phase_with_its_figures(
    bench: ModuleType, admin_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Seed\n\nseed figures\n")
    argv = ["--users", "2000", "--top-k", "20", "--admin-url", admin_url, "--out", str(out)]
    assert bench.main(argv) == 0
    _scratch_database_is_gone(admin_url, capsys.readouterr().err)
    text = out.read_text()
    assert "seed figures" in text and "## Scale" in text
    rows = _rows(text)
    assert list(rows) == list(bench.PHASES)
    for phase, cells in rows.items():
        assert len(cells) == 12, cells
        for i, cell in enumerate(cells[1:], start=1):
            no_rate = i == 3 and phase == "upgrade"  # rows/s of a phase writing no rows
            assert re.fullmatch(NUMBER, cell) or (no_rate and cell == "-"), (phase, cells)
    for phase in ("seed", "quiz", "interests", "ratings", "likes", "match"):
        assert int(rows[phase][2].replace(",", "")) > 0, phase  # rows written
    assert "every phase succeeded" in text
    assert re.search(r"load average \d+\.\d\d at start", text)
    assert "scripts/bench_scale.py --users 2000 --top-k 20" in text
    match = re.search(r"Match: ([\d,]+) users scored, ([\d,]+) rows", text)
    assert match and int(match.group(2).replace(",", "")) <= 20 * int(
        match.group(1).replace(",", "")
    )


def test_a_failing_phase_keeps_the_earlier_phases_and_says_why(
    bench: ModuleType, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # top_k above the config's limit: the first job phase stops on the config error.
    argv = ["--users", "200", "--top-k", "999999", "--admin-url", admin_url, "--no-write"]
    assert bench.main(argv) == 1
    captured = capsys.readouterr()
    _scratch_database_is_gone(admin_url, captured.err)
    rows = _rows(captured.out)
    assert list(rows) == ["upgrade", "seed", "quiz (FAILED)"]
    assert int(rows["seed"][2].replace(",", "")) > 0
    assert "phase `quiz` failed: exit 1" in captured.out
    assert "top_k" in captured.out
    assert "not run: interests, ratings, likes, match" in captured.out


@pytest.mark.ray
def test_a_run_out_of_budget_stops_the_phase_and_reports_it(
    bench: ModuleType, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Eight seconds never reach the end: the match phase alone starts Ray.
    argv = ["--users", "300", "--budget-s", "8", "--admin-url", admin_url, "--no-write"]
    assert bench.main(argv) == 1
    captured = capsys.readouterr()
    _scratch_database_is_gone(admin_url, captured.err)
    rows = _rows(captured.out)
    phases = list(rows)
    assert phases[-1].endswith(" (STOPPED)")
    assert [p.removesuffix(" (STOPPED)") for p in phases] == list(bench.PHASES[: len(phases)])
    assert "--budget-s 8 s ran out" in captured.out


def test_a_phase_stopped_from_outside_is_not_reported_as_its_last_log_line(
    bench: ModuleType,
) -> None:
    # A 1M match stopped by hand exited 1 after Ray's SIGTERM handler, and the report named
    # a Ray info message about lost objects as the cause.
    stderr = (
        "*** SIGTERM received at time=1796326342 on cpu 1 ***\n"
        "core_worker.cc:609: :info_message: Attempting to recover 2 lost objects\n"
    )
    memory = bench.benchmarks.TreeMemory(os.getpid())
    reason = bench.failure_reason(1, stderr, memory, 10 * 2**30)
    assert reason == "exit 1 after a SIGTERM from outside the run (stopped, not crashed)"
