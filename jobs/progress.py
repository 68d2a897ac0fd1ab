"""Progress bars: shown only on an interactive terminal, silent in CI and pipes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI") is None


def bar(*, total: int, desc: str, enabled: bool, unit: str = "it") -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not enabled
    )


@contextlib.contextmanager
def status(job: str, *, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A line on stderr naming the job, its phase in progress and the time so far.

    Yields the function to call with each phase's name. Disabled (not a terminal, CI,
    ``--json``), nothing is shown: the runner logs one line per run when it ends.
    """
    if not enabled:
        yield lambda _phase: None
        return
    line = tqdm(total=None, desc=job, bar_format="{desc} ({elapsed})", file=sys.stderr, leave=False)

    def phase(name: str) -> None:
        line.set_description_str(f"{job}: {name}")

    try:
        yield phase
    finally:
        line.close()
