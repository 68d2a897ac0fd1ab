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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


JOBS_MODULES = {_module_name(p) for p in (ROOT / "jobs").rglob("*.py")}


def _jobs_imports(path: Path) -> set[str]:
    """jobs.* modules imported anywhere in ``path`` (a lazy import inside a function is
    still a dependency: it only moves the moment the circle closes)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("jobs"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("jobs")
        ):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in JOBS_MODULES else node.module)
    return found


def test_jobs_has_no_import_circles() -> None:
    """Regression (issue 10): jobs/match.py called the Ray driver and the driver imported
    match.py's pieces back. Imports between jobs/ modules must form a DAG."""
    graph = {_module_name(p): _jobs_imports(p) for p in sorted((ROOT / "jobs").rglob("*.py"))}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append([*trail, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_production_code_never_imports_the_tools_or_the_cli() -> None:
    """jobs/tools (seed, evaluate, explain, report, importers) and jobs/cli are what people
    run; the jobs, the worker, the pipeline and storage stand without them."""
    offenders = []
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        name = _module_name(path)
        if name.startswith(("jobs.tools", "jobs.cli")) or name in ("jobs", "jobs.__main__"):
            continue
        text = path.read_text()
        for needle in ("jobs.tools", "jobs.cli", "from jobs import cli"):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []
