"""What every job receives: ``JobContext`` (config, session, clock, logger) and ``Scope``."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from jobs.config import Config
from jobs.errors import ScopeError


@dataclasses.dataclass(frozen=True)
class Scope:
    """What a run processes: every active user (``user_ids is None``) or the listed users."""

    user_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.user_ids is not None:
            if not self.user_ids:
                raise ScopeError("a user scope needs at least one user id")
            if any(int(u) <= 0 for u in self.user_ids):
                raise ScopeError(f"user ids must be positive; got {self.user_ids}")

    @classmethod
    def all(cls) -> Scope:
        return cls(None)

    @classmethod
    def users(cls, *user_ids: int) -> Scope:
        return cls(tuple(sorted({int(u) for u in user_ids})))

    @property
    def is_all(self) -> bool:
        return self.user_ids is None

    def ids_array(self) -> np.ndarray | None:
        return None if self.user_ids is None else np.asarray(self.user_ids, dtype=np.int64)

    @property
    def label(self) -> str:
        """The ledger's scope key: ``all``, ``user:42`` or ``users:<n>:<digest>``."""
        if self.user_ids is None:
            return "all"
        if len(self.user_ids) == 1:
            return f"user:{self.user_ids[0]}"
        digest = hashlib.sha1(",".join(map(str, self.user_ids)).encode()).hexdigest()[:10]
        return f"users:{len(self.user_ids)}:{digest}"


@dataclasses.dataclass
class Figures:
    """Mutable figures a job collects while it runs; the runner stores them in ``job_runs``."""

    phases_s: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Set, the run ends ``succeeded_with_warnings`` instead of ``succeeded``.
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Told each phase's name as it starts (the runner's progress line on a terminal).
    on_phase: Callable[[str], None] | None = dataclasses.field(default=None, repr=False)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.on_phase is not None:
            self.on_phase(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases_s[name] = round(
                self.phases_s.get(name, 0.0) + time.perf_counter() - start, 4
            )

    def warn(self, message: str, logger: logging.Logger, action: str) -> None:
        """Record a warning about the run's output (it still succeeds) and log it."""
        self.warnings.append(message)
        logger.warning("%s", message, extra={"action": action})

    def skip(self, counts: dict[str, int], logger: logging.Logger, action: str) -> None:
        """Add skipped-row counts; log one line per reason."""
        for reason, n in counts.items():
            if n:
                self.skipped[reason] = self.skipped.get(reason, 0) + int(n)
                logger.warning(
                    "skipped %d rows: %s", n, reason, extra={"action": action, "reason": reason}
                )


@dataclasses.dataclass(frozen=True)
class JobContext:
    config: Config
    session: Session
    now: dt.datetime
    logger: logging.Logger
    database_url: str
    run_id: int | None = None
    # The pinned time (``--as-of``) that ``now`` equals, or None when ``now`` is the run's
    # start: a driver passes it on to the runs it starts.
    as_of: dt.datetime | None = None
    trigger: str = "on_demand"
    figures: Figures = dataclasses.field(default_factory=Figures)
    show_progress: bool = False
    # Publish a nightly match output even below audit.min_coverage (--force-swap).
    force_swap: bool = False
    # Let a nightly match rewrite a version whose rows carry another scoring hash
    # (--replace-version).
    replace_version: bool = False


@dataclasses.dataclass(frozen=True)
class JobResult:
    rows_read: int = 0
    rows_written: int = 0
    users: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The run's warnings (``Figures.warn``), filled in by the runner.
    warnings: tuple[str, ...] = ()
