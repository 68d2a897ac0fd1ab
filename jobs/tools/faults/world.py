"""A seeded PostgreSQL world for the fault suite, and the real processes run against it.

A world is one database (migrated, seeded with ``jobs.tools.seed``, signal tables written by
the three signal jobs), a config file with small, fast settings (short lease, bounded Ray)
that every process reads, and a working folder for the processes' logs. The match job runs
in child processes (``python -m jobs run match``) in their own session, so a fault can be
sent to the driver and everything it started (its Ray head and actors) by process group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from jobs import config as config_mod
from jobs import pipeline, runner
from jobs.context import Scope
from jobs.storage import engine as engine_mod
from jobs.storage import faults as fault_store
from jobs.storage import migrate
from jobs.tools import seed as seed_mod

# Small and fast, but every mechanism on: Ray actors, shards, retries, a lease that a
# paused process loses within seconds.
OVERRIDES: dict[str, dict[str, Any]] = {
    "candidates": {"quiz_k": 30, "interest_k": 30, "fallback_k": 30},
    "scoring": {"top_k": 20},
    "audit": {"sample_users": 20},
    "ray": {
        "enabled": True,
        "shard_size": 50,
        "num_actors": 2,
        "num_cpus_per_actor": 1,
        "object_store_mb": 100,
        "max_retries": 2,
    },
    "retry": {"write_attempts": 4, "backoff_s": 0.05, "max_backoff_s": 0.5},
    # A 3 s lease was too short on this shared box at load 20: a live driver's beats were
    # starved, the worker's sweep abandoned it and the fence then failed it (safely).
    "runner": {"heartbeat_interval_s": 0.5, "lease_s": 8.0},
}


def tagged_url(url: str, application_name: str) -> str:
    """``url`` whose sessions carry ``application_name`` (spared by session terminations)."""
    parsed = sa.engine.make_url(url).update_query_dict({"application_name": application_name})
    return str(parsed.render_as_string(hide_password=False))


def make_config(**sections: dict[str, Any]) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    for name, values in {**OVERRIDES, **sections}.items():
        data[name] = {**data[name], **values}
    return config_mod.from_mapping(data, source="faults")


@dataclasses.dataclass
class World:
    """One seeded database and the config every process of a scenario uses."""

    url: str
    engine: sa.Engine
    config: config_mod.Config
    config_path: Path
    workdir: Path
    n_users: int

    @property
    def version(self) -> str:
        return self.config.algorithm_version

    def checks(self) -> dict[str, Any]:
        from jobs.storage import invariants

        with self.engine.connect() as conn:
            return invariants.all_checks(
                conn,
                self.version,
                default_max_distance_km=self.config.filters.default_max_distance_km,
            )


def prepare(url: str, workdir: Path, *, n_users: int, seed: int, **sections: Any) -> World:
    """Migrate, seed and compute the signal tables of the (empty) database at ``url``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = make_config(**sections)
    data = config.model_dump(mode="json")
    config_path = workdir / "faults.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    engine = engine_mod.create_engine(tagged_url(url, "faults-probe"))
    migrate.upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        seed_mod.write(conn, seed_mod.generate(n_users, seed, now))
    for job in pipeline.SIGNAL_JOBS:  # the likes job too: behaviour signals as served
        runner.execute(
            job,
            runner.job_function(job),
            engine=engine,
            database_url=url,
            config=config,
            scope=Scope.all(),
            trigger="nightly",
        )
    return World(url, engine, config, config_path, workdir, n_users)


_LAUNCHED: list[Job] = []


def stop_all() -> None:
    """SIGKILL the process group of every child launched here that may still run (a
    scenario that failed half-way must not leave a driver or its Ray behind)."""
    while _LAUNCHED:
        _LAUNCHED.pop().signal(signal.SIGKILL)


@dataclasses.dataclass
class Job:
    """A child process running one command of the CLI, in a session (process group) of its
    own, so that a signal reaches the driver and every process it started."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    def signal(self, sig: signal.Signals) -> None:
        # The group is the child's own: its id is the child's pid (start_new_session).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout_s: float = 300.0) -> int:
        return self.proc.wait(timeout=timeout_s)

    def finish(self, timeout_s: float = 300.0) -> tuple[int, float]:
        """Wait for the child; its exit code and seconds since launch. The group is then
        killed, so no Ray process it started outlives it."""
        code = self.wait(timeout_s)
        elapsed = time.monotonic() - self.started
        self.signal(signal.SIGKILL)
        return code, elapsed

    def pids(self, title: str) -> list[int]:
        """Processes started by the child whose command line holds ``title`` (Ray names its
        actors ``ray::ShardScorer``). Ray's workers make sessions of their own, so they are
        found as children of a process of the child's group (the raylet), not by group."""
        table: dict[int, tuple[int, int, str]] = {}  # pid -> (parent, group, command)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            # Fields after the parenthesised name: state, ppid, pgrp, …
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), command)
        group = {pid for pid, (_, pgrp, _) in table.items() if pgrp == self.proc.pid}
        return sorted(
            pid
            for pid, (parent, pgrp, command) in table.items()
            if title in command and (pgrp == self.proc.pid or parent in group)
        )

    def tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def launch(world: World, *args: str, url: str | None = None) -> Job:
    """``python -m jobs --db URL --config world.yaml ARGS…`` as a child in its own session."""
    log = world.workdir / f"job-{uuid.uuid4().hex[:8]}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    command = [
        sys.executable,
        "-m",
        "jobs",
        "--db",
        url or world.url,
        "--config",
        str(world.config_path),
        *args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    job = Job(proc, log, time.monotonic())
    _LAUNCHED.append(job)
    return job


def wait_for(predicate: Any, *, timeout_s: float, poll_s: float = 0.05, what: str) -> Any:
    """Poll ``predicate()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def running_run(world: World, job: str = "match", scope: str = "all") -> int | None:
    with world.engine.connect() as conn:
        return fault_store.running_run(conn, job, scope)


def stage_rows(world: World, run_id: int) -> int:
    with world.engine.connect() as conn:
        return fault_store.stage_rows(conn, run_id)


def served_digest(world: World) -> tuple[int, str]:
    """(rows, digest) of the served set, computed_at left out: equal sets, equal digests."""
    with world.engine.connect() as conn:
        return fault_store.served_digest(conn, world.version)


def served_stamps(world: World) -> set[dt.datetime]:
    with world.engine.connect() as conn:
        return fault_store.served_stamps(conn, world.version)


@dataclasses.dataclass
class Database:
    url: str
    name: str


def scratch_databases(admin_url: str, prefix: str = "mjfaults") -> Iterator[Database]:
    """Fresh empty databases beside ``admin_url``'s, each dropped when the next is asked
    for or the generator is closed."""
    admin = engine_mod.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    current: str | None = None
    try:
        while True:
            name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                if current is not None:
                    fault_store.drop_database(conn, current)
                fault_store.create_database(conn, name)
            current = name
            url = sa.engine.make_url(admin_url).set(database=name)
            yield Database(str(url.render_as_string(hide_password=False)), name)
    finally:
        if current is not None:
            with admin.connect() as conn:
                fault_store.drop_database(conn, current)
        admin.dispose()


def publish_baseline(world: World) -> float:
    """A clean match run in this process (shards in-process, no Ray), so that a scenario
    starts from a served set; its seconds."""
    started = time.monotonic()
    runner.execute(
        "match",
        runner.job_function("match"),
        engine=world.engine,
        database_url=world.url,
        config=make_config(ray={"enabled": False}),
        scope=Scope.all(),
        trigger="on_demand",
    )
    return time.monotonic() - started
