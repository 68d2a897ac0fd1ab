"""The benchmark scripts, imported as modules for their tests."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """``script("bench_seed")``: the module of ``scripts/bench_seed.py``."""
    # On sys.path, not loaded from a file spec: a script that runs work in a spawned child
    # process has the child import the script's module by name.
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module


@pytest.fixture
def admin_url() -> str:
    """The PostgreSQL server's admin URL, for a script's ``--admin-url`` (its scratch
    databases go there)."""
    return os.environ.get("MATCHJOBS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
