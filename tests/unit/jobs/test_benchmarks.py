"""Each benchmark replaces only its own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from jobs.tools import benchmarks


def test_replace_section_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Seed\n\nold seed\n\n## Match job\n\nmatch figures\n")
    benchmarks.replace_section(path, "## Seed", "## Seed\n\nnew seed\n")
    benchmarks.replace_section(path, "## Signal jobs", "## Signal jobs\n\nsignals\n")
    text = path.read_text()
    assert "old seed" not in text and "new seed" in text
    assert text.index("## Seed") < text.index("## Match job") < text.index("## Signal jobs")
    assert "match figures" in text and text.endswith("signals\n")
