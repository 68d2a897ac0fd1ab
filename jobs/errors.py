"""The matchjobs error tree.

    JobError                      anything a job, the runner or the CLI reports as a failure
    ├── ConfigError               a config file or option is invalid; nothing was written
    ├── StorageError              the database refused or failed an operation
    │                             (``transient``: worth retrying, e.g. a lost connection)
    ├── ScopeError                the requested scope (user, shard) does not exist or is invalid
    ├── RunConflictError          a run of the same job and scope is already in progress
    ├── LeaseLostError            a run was abandoned (its lease ran out); it may write nothing
    ├── VersionConflictError      a version's rows carry another scoring hash than this config's
    ├── EventError                an event names no valid user or lacks what its kind needs
    ├── InputDataError            the input tables are unusable as a whole (not a bad row)
    │   └── TooFewPairsError      too few decided pairs to fit weights on (``tune``)
    ├── DatabaseNotEmptyError     a loader would mix its rows with existing source rows
    ├── WorkerError               a Ray worker scoring a shard failed (not a database error)
    └── LowCoverageError          a run's output leaves too many users without a list

Each class's docstring is its default message. Bad *rows* are never errors: they are
skipped and counted in the run's metadata. :func:`chain_parts` and :func:`error_chain` give an
error and its causes as plain text (for ``job_runs.error`` and the CLI's ``-v``).
"""

from __future__ import annotations

import re


class JobError(Exception):
    """A matchjobs job failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class ConfigError(JobError):
    """The configuration is invalid; nothing was written."""


class StorageError(JobError):
    """The database operation failed."""

    def __init__(self, message: str | None = None, *, transient: bool = False) -> None:
        super().__init__(message)
        # A lost connection, an admin shutdown, a serialization failure or a deadlock:
        # the same operation may succeed when retried (see storage.engine.is_transient).
        self.transient = transient


class ScopeError(JobError):
    """The requested scope is invalid."""


class RunConflictError(JobError):
    """A run of this job and scope is already in progress."""


class LeaseLostError(JobError):
    """The run is no longer ``running`` (abandoned after its lease ran out): nothing it
    computed may be written."""


class VersionConflictError(JobError):
    """The algorithm version's rows were scored by another config; nothing was written."""


class EventError(JobError):
    """The event is invalid; it was not queued."""


class InputDataError(JobError):
    """The input data cannot be used."""


class TooFewPairsError(InputDataError):
    """Too few decided pairs to fit the signal weights on; nothing was written."""


class DatabaseNotEmptyError(JobError):
    """The database already holds source rows; pass --replace to delete them first."""


class WorkerError(JobError):
    """A Ray worker scoring a shard failed."""


class LowCoverageError(JobError):
    """The run's output leaves too many active users without suggestions."""


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes (Ray colours its task names and tracebacks)."""
    return _ANSI_ESCAPE.sub("", text)


def chain_parts(exc: BaseException) -> list[str]:
    """``Type: message`` for the exception and each of its causes, outermost first.

    A suppressed context (``raise … from None``) ends the chain. Causes do not survive
    pickling across a Ray boundary, so a worker stores them as texts in ``causes``
    (:func:`keep_causes`); they continue the chain where the live one ends.
    """
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(plain_text(f"{type(current).__name__}: {current}"))
        following = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
        if following is None:
            parts.extend(getattr(current, "causes", ()))
        current = following
    return parts


def keep_causes(exc: BaseException) -> BaseException:
    """Store ``exc``'s causes as texts on it, so they cross a process boundary; ``exc``."""
    exc.causes = chain_parts(exc)[1:]  # type: ignore[attr-defined]
    return exc


def error_chain(exc: BaseException) -> str:
    """Plain ``Type: message`` lines of the exception and its causes, outermost first."""
    return "\ncaused by ".join(chain_parts(exc))
