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


def test_replace_subsection_keeps_the_intro_and_orders_by_users(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Seed\n\nseed\n")
    heading, intro = "## Candidate generation", "What is measured."
    benchmarks.replace_subsection(
        path,
        heading,
        intro,
        "### 300,000 users, dense cities",
        "### 300,000 users, dense cities\n\nb\n",
    )
    benchmarks.replace_subsection(
        path,
        heading,
        "ignored",
        "### 100,000 users, dense cities",
        "### 100,000 users, dense cities\n\na\n",
    )
    benchmarks.replace_subsection(
        path,
        heading,
        "ignored",
        "### 300,000 users, dense cities",
        "### 300,000 users, dense cities\n\nc\n",
    )
    text = path.read_text()
    assert text == (
        "# Benchmarks\n\n## Seed\n\nseed\n\n## Candidate generation\n\nWhat is measured.\n\n"
        "### 100,000 users, dense cities\n\na\n\n### 300,000 users, dense cities\n\nc\n"
    )
