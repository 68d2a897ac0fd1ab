"""The Dockerfile cannot be built here (no engine): check what it copies and runs instead."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_copies_every_package_and_the_config_and_they_exist() -> None:
    sources = []
    for args in instructions("COPY"):
        *srcs, _dest = args.split()
        sources.extend(srcs)
    for src in sources:
        assert (ROOT / src.rstrip("/")).exists(), f"Dockerfile copies missing {src}"
    for needed in ("compute/", "jobs/", "configs/", "pyproject.toml", "requirements.lock"):
        assert needed in sources, f"Dockerfile does not copy {needed}"


def test_python_version_matches_the_project() -> None:
    (base,) = instructions("FROM")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "3.11" in base
    assert project["requires-python"].startswith(">=3.11")


def test_installs_from_the_lock_and_runs_the_console_script() -> None:
    runs = " ".join(instructions("RUN"))
    assert "requirements.lock" in runs
    # the lock's test-only tools are dropped; every runtime dependency stays pinned
    for dep in ("ray", "faiss-cpu", "numpy", "pandas", "SQLAlchemy", "psycopg", "alembic"):
        assert re.search(rf"^{dep}==", (ROOT / "requirements.lock").read_text(), re.M | re.I), dep
    (entrypoint,) = instructions("ENTRYPOINT")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == '["matchjobs"]'
    assert scripts["matchjobs"] == "jobs.cli:main"
    assert instructions("USER") == ["matchjobs"]
