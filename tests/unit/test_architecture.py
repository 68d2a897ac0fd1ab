"""The layout is the architecture: compute/ stays pure, imports go one way (jobs -> compute)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_COMPUTE = {
    "jobs",
    "sqlalchemy",
    "psycopg",
    "ray",
    "yaml",
    "pydantic",
    "alembic",
    "tqdm",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_compute_imports_nothing_with_effects() -> None:
    files = sorted((ROOT / "compute").rglob("*.py"))
    assert files, "compute/ has no modules"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN_IN_COMPUTE)
        for f in files
        if imported_modules(f) & FORBIDDEN_IN_COMPUTE
    }
    assert offenders == {}


def test_compute_reads_no_environment_files_or_clock() -> None:
    offenders = []
    for path in sorted((ROOT / "compute").rglob("*.py")):
        text = path.read_text()
        for needle in ("os.environ", "getenv(", "open(", "datetime.now", "time.time(", "print("):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


def test_scripts_hold_no_reusable_logic_imports_of_private_helpers() -> None:
    # scripts/ call the packages; the packages never import scripts/
    for package in ("compute", "jobs"):
        for path in (ROOT / package).rglob("*.py"):
            assert "scripts" not in imported_modules(path), path
