"""Progress bars: shown only on an interactive terminal, silent in CI and pipes."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI") is None


def bar(*, total: int, desc: str, enabled: bool, unit: str = "it") -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=not enabled
    )
