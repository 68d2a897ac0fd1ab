"""scripts/bench_cli.py keeps working: each command once on both backends, printed only."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

import pytest

pytestmark = pytest.mark.postgres


@pytest.mark.slow
def test_a_small_run_times_every_command_on_both_backends(
    script: Callable[[str], ModuleType], admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = script("bench_cli")
    argv = ["--users", "300", "--repeat", "1", "--admin-url", admin_url, "--no-write"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    for label, _, _ in bench.COMMANDS:
        for backend in ("sqlite", "postgres"):
            assert re.search(rf"\| `{re.escape(label)}` \| {backend} \| [\d.]+ \|", text), label
    for job in ("quiz", "interests", "ratings"):
        assert re.search(rf"\| {job} \| [\d.]+ \| [\d.]+ \| (yes|no) \|", text), job
