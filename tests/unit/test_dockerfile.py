"""The Dockerfile cannot be built here (no engine): check what it copies and runs instead."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The test extra's packages and what only they pull in.
TEST_ONLY = {
    "pytest",
    "hypothesis",
    "ruff",
    "threadpoolctl",
    "kubernetes-validate",
    "iniconfig",
    "pluggy",
    "pygments",
    "sortedcontainers",
    "importlib-resources",
    "mypy",
    "mypy-extensions",
    "librt",
    "ast-serialize",
    "pathspec",
    "pandas-stubs",
    "scipy-stubs",
    "optype",
}


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def pins(path: str) -> dict[str, str]:
    """``{normalized name: version}`` of a lock file."""
    result = {}
    for line in (ROOT / path).read_text().splitlines():
        name, _, version = line.partition("==")
        result[re.sub(r"[-_.]+", "-", name).lower()] = version
    return result


def test_copies_every_package_and_the_config_and_they_exist() -> None:
    sources = []
    for args in instructions("COPY"):
        *srcs, _dest = args.split()
        sources.extend(srcs)
    for src in sources:
        assert (ROOT / src.rstrip("/")).exists(), f"Dockerfile copies missing {src}"
    for needed in ("compute/", "jobs/", "configs/", "pyproject.toml", "requirements-runtime.lock"):
        assert needed in sources, f"Dockerfile does not copy {needed}"


def test_python_version_matches_the_project() -> None:
    (base,) = instructions("FROM")
    assert base == "python:3.11-slim"
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")


def test_installs_the_runtime_lock_without_test_tools() -> None:
    """Issue 13: the image (and the cluster recipe's runtime_env) had no ray[default], so
    `ray job submit` and the dashboard failed; the test tools were filtered out by a grep."""
    runs = " ".join(instructions("RUN"))
    assert "-r requirements-runtime.lock" in runs
    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    # The runtime lock is the full lock less the test-only packages, at the same versions.
    assert runtime == {name: v for name, v in full.items() if name not in TEST_ONLY}
    assert not TEST_ONLY & set(runtime)
    # ray[default]'s extras are pinned: the jobs CLI needs aiohttp, the dashboard's agent.
    assert "ray[default]" in " ".join(PYPROJECT["project"]["dependencies"])
    for dep in ("ray", "aiohttp", "aiohttp-cors", "grpcio", "py-spy", "smart-open", "faiss-cpu"):
        assert dep in runtime, dep


def test_the_image_is_usable_as_a_ray_node() -> None:
    """No ENTRYPOINT (KubeRay and `docker run IMAGE ray start …` give the command), a
    working directory its user owns, and the console script as the default command."""
    assert instructions("ENTRYPOINT") == []
    (cmd,) = instructions("CMD")
    assert json.loads(cmd)[0] == "matchjobs"
    assert PYPROJECT["project"]["scripts"]["matchjobs"] == "jobs.cli:main"
    assert instructions("USER") == ["matchjobs"]
    assert instructions("WORKDIR") == ["/app"]
    assert "chown -R matchjobs:matchjobs /app" in " ".join(instructions("RUN"))
    # KubeRay's probes exec wget in the Ray containers.
    assert re.search(r"apt-get install [^&]*\bwget\b", " ".join(instructions("RUN")))
