"""A reader that loops the API's query through a scenario and counts bad reads.

Every set a job publishes is stamped with its run's ``computed_at``, and rows only ever
leave a published set (the app's exclusions), never join it. So a read is bad when

- it mixes rows of two sets (two ``computed_at`` in one read): ``mixed``;
- it holds fewer rows of a set than a later read of the same set: the earlier read saw
  half a set (``partial``, counted on the later read, which proves it);
- it is empty for a user whose list was served before and is served after, and whom the
  scenario did not touch (``empty``) — unless every row of the last whole list read for
  them was with a user the scenario touched: a row (u, c) may leave its set only when u or
  c changed, so such a list may empty with the user untouched;
- it fails (``errors``): a reader must never be refused by a swap.

Latencies are kept per phase (``idle``, ``writes`` …), set by the scenario.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import numpy as np
import sqlalchemy as sa

from jobs.storage import engine as engine_mod
from jobs.storage import faults as fault_store
from jobs.tools.faults import world as world_mod


class Reader:
    """A thread reading random users' sets until stopped; ``report()`` its figures."""

    def __init__(self, url: str, version: str, users: list[int], limit: int, seed: int = 0):
        self._engine = engine_mod.create_engine(world_mod.tagged_url(url, "faults-reader"))
        self._version = version
        self._users = list(users)
        self._limit = limit
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._touched: set[int] = set()
        self.phase = "idle"
        self._latency: dict[str, list[float]] = {}
        self._largest: dict[tuple[int, Any], int] = {}
        self._empty_at: dict[int, int] = {}
        self._served: set[int] = set()
        # Candidates of each user's last read, when it held the whole list (< limit rows).
        self._whole_list: dict[int, frozenset[int]] = {}
        self.reads = 0
        self.bad = {"mixed": 0, "partial": 0, "empty": 0, "errors": 0}
        self.first_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="faults-reader", daemon=True)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._engine.dispose()

    def touch(self, *user_ids: int) -> None:
        """Users the scenario changes: their lists may legitimately empty or shrink."""
        with self._lock:
            self._touched.update(int(u) for u in user_ids)

    def _loop(self) -> None:
        conn: sa.Connection | None = None
        while not self._stop.is_set():
            user = self._rng.choice(self._users)
            phase = self.phase
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = self._engine.connect()
                rows = fault_store.read_set(conn, self._version, user, self._limit)
                conn.rollback()
            except sa.exc.DBAPIError as exc:
                self.bad["errors"] += 1
                self.first_error = self.first_error or str(exc.orig).splitlines()[0]
                if conn is not None:
                    conn.invalidate()
                    conn.close()
                conn = None
                continue
            elapsed = time.perf_counter() - started
            self._latency.setdefault(phase, []).append(elapsed)
            self.reads += 1
            self._judge(user, rows)
            # A steady client, not a busy loop: the box's two cores are the jobs' too.
            self._stop.wait(0.002)
        if conn is not None:
            conn.close()

    def _judge(self, user: int, rows: list[Any]) -> None:
        with self._lock:
            touched = user in self._touched
        stamps = {r.computed_at for r in rows}
        if len(stamps) > 1:
            self.bad["mixed"] += 1
            return
        if not rows:
            # Every row of the last whole list with a changed user: all may have left.
            with self._lock:
                emptied = self._whole_list.get(user, frozenset({-1})) <= self._touched
            if not touched and user in self._served and not emptied:
                self._empty_at[user] = self.reads
            return
        if len(rows) < self._limit:
            self._whole_list[user] = frozenset(int(r.candidate_id) for r in rows)
        else:
            self._whole_list.pop(user, None)
        if user in self._empty_at and not touched:
            # Served before, empty in between, served again: a reader saw no set at all.
            self.bad["empty"] += 1
            del self._empty_at[user]
        self._served.add(user)
        key = (user, next(iter(stamps)))
        seen = self._largest.get(key)
        if seen is not None and len(rows) > seen and not touched:
            self.bad["partial"] += 1
        self._largest[key] = max(seen or 0, len(rows))

    def report(self) -> dict[str, Any]:
        latency = {}
        for phase, values in self._latency.items():
            ms = np.asarray(values) * 1000
            latency[phase] = {
                "reads": int(ms.size),
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
            }
        return {
            "reads": self.reads,
            "bad_reads": sum(self.bad.values()),
            "bad": dict(self.bad),
            "latency": latency,
            "first_error": self.first_error,
        }
