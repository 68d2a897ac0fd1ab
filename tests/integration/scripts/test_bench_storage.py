"""scripts/bench_storage.py keeps working: prepare, measure, reads and render, on 300 users."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.postgres


@pytest.mark.slow
@pytest.mark.ray
def test_a_small_round_renders_the_storage_section(
    script: Callable[[str], ModuleType],
    admin_url: str,
    scratch_db_name: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = script("bench_storage")
    base_db = scratch_db_name("mj_test_bench_storage", "_a")
    common = ["--admin-url", admin_url, "--base-db", base_db, "--results", str(tmp_path / "r.json")]
    assert bench.main([*common, "prepare", "--users", "300", "--labels", "a"]) == 0
    assert bench.main([*common, "measure", "--label", "a", "--reads", "20"]) == 0
    assert bench.main([*common, "reads", "--label", "a", "--reads", "20"]) == 0
    assert bench.main([*common, "render", "--no-write"]) == 0
    text = capsys.readouterr().out
    section = text[text.index(bench.SECTION) :]
    assert re.search(r"\| a \|", section), section
    assert "API read plan (last run):" in section
