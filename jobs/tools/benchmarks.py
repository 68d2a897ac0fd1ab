"""Shared by the ``scripts/bench_*.py`` benchmarks: their sections of BENCHMARKS.md."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, heading: str, section: str) -> None:
    """Replace the section under ``heading`` (e.g. ``## Seed``) in ``path``, or append it.

    ``section`` starts with the heading line; every other section is kept as it is.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def replace_subsection(path: Path, heading: str, intro: str, subheading: str, body: str) -> None:
    """Replace the ``### subheading`` part of the ``heading`` section, or add it in order.

    The section keeps its introduction (``intro`` is written only when the section is new)
    and its other subsections; subsections are kept sorted by heading text. ``body`` starts
    with the subheading line.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    found = pattern.search(text)
    section = found.group(0) if found else f"{heading}\n\n{intro.strip()}\n"
    parts = re.split(r"^(?=### )", section, flags=re.MULTILINE)
    head = parts[0]
    subsections = {p.splitlines()[0]: p.rstrip("\n") + "\n\n" for p in parts[1:]}
    subsections[subheading] = body.rstrip("\n") + "\n\n"
    ordered = [subsections[key] for key in sorted(subsections, key=_subsection_key)]
    new_section = head.rstrip("\n") + "\n\n" + "".join(ordered)
    replace_section(path, heading, new_section.rstrip("\n") + "\n")


def _subsection_key(line: str) -> tuple[int, str]:
    """Subsections named after a number of users sort by that number, then by text."""
    digits = re.match(r"### ([\d,]+)", line)
    return (int(digits.group(1).replace(",", "")) if digits else 0, line)
