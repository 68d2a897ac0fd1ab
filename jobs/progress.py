"""Progress bars: shown only on an interactive terminal, silent in CI and pipes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI") is None


def track(items: Iterable[T], *, total: int | None, desc: str, enabled: bool) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit="shard", file=sys.stderr, leave=False)


def bar(*, total: int, desc: str, enabled: bool, unit: str = "it") -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not enabled
    )
