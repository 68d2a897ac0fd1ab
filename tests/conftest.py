"""Shared fixtures: databases on both engines, one local Ray instance, the default config.

Migrations run once per test session into a template (a PostgreSQL template database, or an
SQLite file); each test that asks for ``db`` gets a fresh clone, dropped afterwards, so tests
that cross processes (Ray actors, CLI subprocesses) see committed data like production does.

PostgreSQL must be reachable (``.ci/run`` starts it): an unreachable server fails the tests
rather than skipping them, unless ``MATCHJOBS_TEST_SKIP_PG=1`` is set explicitly. Every
database a test creates is named ``MATCHJOBS_TEST_DB_PREFIX`` (default ``mjt_``) followed by
a unique suffix, so that sessions sharing a server can tell theirs apart.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs import config as config_mod
from jobs.storage import engine as engine_mod
from jobs.storage import migrate

PG_ADMIN_URL = os.environ.get(
    "MATCHJOBS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SKIP_PG = os.environ.get("MATCHJOBS_TEST_SKIP_PG") == "1"


def _db_prefix() -> str:
    prefix = os.environ.get("MATCHJOBS_TEST_DB_PREFIX", "mjt_")
    # Interpolated into CREATE/DROP DATABASE: only a plain identifier start, and short enough
    # that the longest name (prefix + "tpl_" + pid + suffix) stays within PostgreSQL's 63.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,31}", prefix):
        raise pytest.UsageError(
            "MATCHJOBS_TEST_DB_PREFIX must be a lowercase letter or underscore then up to 31 "
            f"lowercase letters, digits or underscores; got {prefix!r}"
        )
    return prefix


DB_PREFIX = _db_prefix()


def unique_db_name(kind: str = "") -> str:
    """A unique name for a database a test creates: the prefix, ``kind``, pid and a suffix."""
    return f"{DB_PREFIX}{kind}{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def new_db_name() -> Callable[[str], str]:
    """``new_db_name("scratch_")``: a unique, prefixed name for a database a test creates."""
    return unique_db_name


@dataclasses.dataclass
class Db:
    """A fresh, migrated database for one test."""

    kind: str  # "sqlite" | "postgres"
    url: str
    engine: sa.Engine

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgres"


def _pg_url(name: str) -> str:
    return str(sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False))


def _pg_admin() -> sa.Engine:
    return engine_mod.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


SPEED_DATING_ENV = "MATCHJOBS_SPEED_DATING_CSV"
# Beside the repository, as the project lays out its shared data (CI gets a copy there too).
SPEED_DATING_BESIDE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "speed-dating"
    / "Speed Dating Data.csv"
)


@pytest.fixture(scope="session")
def speed_dating_csv() -> Path:
    """The Speed Dating CSV: ``$MATCHJOBS_SPEED_DATING_CSV``, else ``../shared/data/...``
    beside the repository; the test is skipped, saying where it looked, when it is absent."""
    given = os.environ.get(SPEED_DATING_ENV)
    path = Path(given) if given else SPEED_DATING_BESIDE
    if not path.is_file():
        source = f"${SPEED_DATING_ENV}" if given else "the default beside the repository"
        pytest.skip(f"Speed Dating CSV not found at {path} ({source}); set {SPEED_DATING_ENV}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if SKIP_PG:
        pytest.skip("MATCHJOBS_TEST_SKIP_PG=1: PostgreSQL tests skipped on request")
    admin = _pg_admin()
    name = unique_db_name("tpl_")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.orig}")
    engine = engine_mod.create_engine(_pg_url(name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def role_prefix(pg_template: str) -> Iterator[str]:
    """A role-name prefix unique to this test session; its roles are dropped at the end.

    Roles are global to the PostgreSQL cluster, so concurrent sessions (other engineers, CI)
    must not share names. Every database they were granted in is dropped before this runs.
    """
    from jobs.storage import roles

    prefix = f"mjt{os.getpid()}_{uuid.uuid4().hex[:6]}_"
    yield prefix
    admin = _pg_admin()
    with admin.connect() as conn:
        roles.drop(conn, prefix)
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = engine_mod.create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def make_db(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.db"
        shutil.copyfile(template, path)
        url = f"sqlite:///{path}"
        engine = engine_mod.create_engine(url)
        yield Db(kind, url, engine)
        engine.dispose()
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = unique_db_name()
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    url = _pg_url(name)
    engine = engine_mod.create_engine(url)
    yield Db(kind, url, engine)
    engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A fresh migrated database, once on SQLite and once on PostgreSQL."""
    yield from make_db(request.param, request, tmp_path)


@pytest.fixture
def twin_db(db: Db, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A second fresh database on ``db``'s engine: run one scenario two ways, compare."""
    twin = tmp_path / "twin"
    twin.mkdir()
    yield from make_db(db.kind, request, twin)


@pytest.fixture
def sqlite_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from make_db("sqlite", request, tmp_path)


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    yield from make_db("postgres", request, tmp_path)


@pytest.fixture(scope="session")
def default_config() -> config_mod.Config:
    return config_mod.load_config()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray instance for the whole test session, with bounded resources."""
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=256 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def seed_with_signals():
    """``seed_with_signals(db, n_users, seed, now, config=None, cities="dense")``: a seeded
    population whose signal tables the three signal jobs have written (through the runner,
    clock ``now``). Dense cities by default: these tests' few hundred users were sized for
    20 cities (row counts, shard counts, coverage), not for a map of many places."""
    import datetime as dt

    from jobs import runner
    from jobs.context import Scope
    from jobs.tools import seed as seed_mod

    def build(
        db: Db,
        n_users: int,
        seed: int,
        now: dt.datetime,
        config: config_mod.Config | None = None,
        cities: str = "dense",
    ) -> config_mod.Config:
        config = config or config_mod.load_config()
        with db.engine.begin() as conn:
            seed_mod.write(conn, seed_mod.generate(n_users, seed, now, cities))
        for job in ("quiz", "interests", "ratings"):
            runner.execute(
                job,
                runner.job_function(job),
                engine=db.engine,
                database_url=db.url,
                config=config,
                scope=Scope.all(),
                trigger="nightly",
                clock=lambda: now,
            )
        return config

    return build
