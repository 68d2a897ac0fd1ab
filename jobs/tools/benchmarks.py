"""Shared by the ``scripts/bench_*.py`` benchmarks: their sections of BENCHMARKS.md, and the
peak memory of a process tree."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from jobs.config import Config


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


def run_job(engine: sa.Engine, config: Config, job: str) -> dict[str, Any]:
    """Run ``job`` over all users as the nightly does, at the seed's ``now``; its ``job_runs``
    duration (``duration_s``), ``run_id`` and metadata. Raises if the run did not succeed."""
    from jobs import runner
    from jobs.context import Scope
    from jobs.storage import ledger
    from jobs.tools import seed

    run_id, _ = runner.execute(
        job,
        runner.job_function(job),
        engine=engine,
        database_url=engine.url.render_as_string(hide_password=False),
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: seed.DEFAULT_NOW,
    )
    run = ledger.recent_runs(engine, limit=1, job_name=job).iloc[0]
    if int(run["id"]) != run_id or run["status"] != "succeeded":
        raise RuntimeError(f"{job} run {run_id} ended {run['status']}: {run['error']}")
    return {
        "run_id": run_id,
        "duration_s": float(run["duration_ms"]) / 1000,
        **json.loads(run["metadata"]),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (``ru_maxrss`` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TreeMemory:
    """Peak memory of process ``pid`` and of everything it started, from ``/proc`` (Linux).

    A background thread samples every ``interval_s``: the root's resident set, the sum of
    the tree's proportional set sizes (PSS: shared pages, such as Ray's object store, counted
    once across the processes that map them, which summed RSS would count in each), the
    number of processes, and the machine's ``MemAvailable`` (its minimum says how close the
    whole machine came to running out, PostgreSQL's backends included, which are not in the
    tree). Use as a context manager around the process's life.
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.root_rss_mb = 0.0
        self.tree_pss_mb = 0.0
        self.processes = 0
        self.min_available_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        tree = descendants(self.pid)
        self.processes = max(self.processes, len(tree))
        self.root_rss_mb = max(self.root_rss_mb, _rss_mb(self.pid))
        self.tree_pss_mb = max(self.tree_pss_mb, sum(_pss_mb(pid) for pid in tree))
        available = _available_mb()
        if available is not None and (
            self.min_available_mb is None or available < self.min_available_mb
        ):
            self.min_available_mb = available


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, by the parent ids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # the name (field 2) is in parentheses and may hold spaces and parentheses
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def stop_tree(root: int, grace_s: float = 15.0) -> None:
    """SIGTERM process ``root`` and everything below it (a driver and its Ray processes),
    then SIGKILL whatever still runs after ``grace_s``."""
    import signal
    import time

    pids = descendants(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None
