"""The scratch database evaluate and tune score in: created, filled with the visible rows,
run through the signal jobs, read back as a population, and dropped unless kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from compute.population import Population
from jobs import pipeline, runner
from jobs.config import Config
from jobs.context import Scope
from jobs.errors import ConfigError, StorageError
from jobs.match import core as match
from jobs.storage import engine as engine_mod
from jobs.storage import migrate, source

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def scratch_database(
    source_engine: sa.Engine, scratch_url: str | None, keep: bool, reset: bool = False
) -> Iterator[tuple[sa.Engine, str]]:
    """An empty, migrated database of the source's engine kind; dropped afterwards unless kept.

    SQLite: a file in a new temporary directory. PostgreSQL: a new database on the source's
    server (the role needs CREATEDB). ``scratch_url`` overrides both and is never dropped;
    ``reset`` empties it first.
    """
    if scratch_url is not None:
        if _same_database(
            sa.engine.make_url(engine_mod.normalize_url(scratch_url)), source_engine.url
        ):
            raise ConfigError(
                f"scratch database {engine_mod.redact(scratch_url)} is the source database; "
                "give another one"
            )
        with _migrated(scratch_url) as engine:
            with engine.begin() as conn:
                if reset:
                    source.delete_all_rows(conn)
                elif source.count_users(conn):
                    raise ConfigError(
                        f"scratch database {engine_mod.redact(scratch_url)} must be empty; "
                        "it has users (--reset-scratch empties it first)"
                    )
            yield engine, scratch_url
        return
    if engine_mod.is_postgres(source_engine):
        with _postgres_scratch(source_engine, keep) as url, _migrated(url) as engine:
            yield engine, url
        return
    directory = Path(tempfile.mkdtemp(prefix="matchjobs-eval-"))
    url = f"sqlite:///{directory / 'scratch.db'}"
    try:
        with _migrated(url) as engine:
            yield engine, url
    finally:
        if keep:
            logger.info("kept scratch database %s", url, extra={"action": "evaluate.keep"})
        else:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _migrated(url: str) -> Iterator[sa.Engine]:
    """An engine on ``url`` with the schema upgraded, disposed afterwards."""
    engine = engine_mod.create_engine(url)
    try:
        migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def _same_database(a: sa.engine.URL, b: sa.engine.URL) -> bool:
    return (a.get_backend_name(), a.host, a.port, a.database) == (
        b.get_backend_name(),
        b.host,
        b.port,
        b.database,
    )


@contextlib.contextmanager
def _postgres_scratch(source_engine: sa.Engine, keep: bool) -> Iterator[str]:
    try:
        url = engine_mod.create_scratch_database(source_engine, "matchjobs_eval")
    except StorageError as exc:
        raise StorageError(
            f"{exc}; a role without CREATEDB can pass --scratch-db URL, an existing database "
            "it may create tables in"
        ) from exc
    try:
        yield url
    finally:
        if keep:
            logger.info(
                "kept scratch database %s",
                engine_mod.redact(url),
                extra={"action": "evaluate.keep"},
            )
        else:
            engine_mod.drop_database(source_engine, url)


def fill_scratch(engine: sa.Engine, visible: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Write the visible source rows into the (empty) scratch database in one transaction."""
    with engine.begin() as conn:
        return source.write_frames(conn, visible)


def run_signal_jobs(
    engine: sa.Engine, url: str, config: Config, now: dt.datetime, *, show_progress: bool = False
) -> dict[str, int]:
    """Run the production signal jobs on the scratch database; run id per job."""
    run_ids: dict[str, int] = {}
    for job in pipeline.SIGNAL_JOBS:
        run_ids[job], _ = runner.execute(
            job,
            runner.job_function(job),
            engine=engine,
            database_url=url,
            config=config,
            scope=Scope.all(),
            trigger="on_demand",
            clock=lambda: now,
            show_progress=show_progress,
        )
    return run_ids


def load_population(engine: sa.Engine, config: Config, now: dt.datetime) -> Population:
    """The population exactly as the match job loads and cleans it."""
    settings = match.settings_from_config(config)
    with engine.connect() as conn, conn.begin():
        pop, _, _ = match.load_clean(conn, now, settings)
    return pop


def signal_settings_key(config: Config) -> str:
    """Configs with equal keys produce identical signal tables and populations."""
    relevant = {
        section: getattr(config, section).model_dump(mode="json")
        for section in ("quiz", "interests", "ratings", "likes", "filters")
    }
    return json.dumps(relevant, sort_keys=True)
