"""The benchmark scripts, imported as modules for their tests."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa

from jobs.storage import engine as engine_mod

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


@pytest.fixture
def scratch_db_name(admin_url: str) -> Iterator[Callable[..., str]]:
    """``scratch_db_name("mj_test_x", "_a")``: a new database name for a script to create
    (``mj_test_x_<hex>``); it, and the names with each suffix, are dropped afterwards (the
    scripts keep their databases for a later run)."""
    names: list[str] = []

    def new(prefix: str, *suffixes: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.extend([name, *(name + suffix for suffix in suffixes)])
        return name

    yield new
    admin = engine_mod.create_engine(admin_url)
    for name in names:
        url = sa.engine.make_url(admin_url).set(database=name)
        engine_mod.drop_database(admin, url.render_as_string(False))
    admin.dispose()
