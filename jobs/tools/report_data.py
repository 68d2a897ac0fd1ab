"""The report's data: what :func:`gather` reads (a :class:`ReportData`) and the figures
derived from it (histograms, contributions, funnel panels, freshness), without plotting.

Reads only, through the aggregate queries of :mod:`jobs.storage.api`, plus the JSON file
``matchjobs evaluate`` writes. :mod:`jobs.tools.report_plots` draws these figures and
:mod:`jobs.tools.report` lays out the page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from jobs import config as config_mod
from jobs.storage import api
from jobs.storage import engine as engine_mod
from jobs.storage.schema import SUBSCORE_COLUMNS

logger = logging.getLogger(__name__)

BINS = 50
DEFAULT_EVALUATION = Path("reports/evaluation.json")


@dataclasses.dataclass(frozen=True)
class ReportData:
    """Everything the page shows, read once."""

    generated_at: dt.datetime
    database: str  # redacted URL
    config_version: str
    config_hash: str
    weights: dict[str, float]  # normalized to sum 1, in SUBSCORE_COLUMNS order
    buckets: pd.DataFrame  # api.score_buckets
    match_run: dict[str, Any] | None  # api.latest_run("match"), metadata parsed
    runs: pd.DataFrame  # api.run_durations
    freshness: dict[str, pd.DataFrame]  # version -> api.set_freshness
    evaluation: dict[str, Any] | None
    evaluation_path: str
    evaluation_problem: str | None  # why there is no evaluation, in words

    @property
    def versions(self) -> list[str]:
        return sorted(self.buckets["algorithm_version"].astype(str).unique())


# ------------------------------------------------------------------------------ gathering


def gather(
    engine: sa.Engine,
    *,
    database_url: str,
    config: config_mod.Config,
    now: dt.datetime,
    evaluation_path: Path = DEFAULT_EVALUATION,
) -> ReportData:
    """Read what the report shows: aggregates only, so it takes seconds on 20M score rows."""
    weights = config.weights.model_dump()
    total = sum(weights.values())
    with engine.connect() as conn:
        buckets = api.score_buckets(conn, BINS)
        match_run = api.latest_run(conn, "match")
        runs = api.run_durations(conn)
        versions = sorted(
            set(buckets["algorithm_version"].astype(str)) | {config.algorithm_version}
        )
        freshness = {v: api.set_freshness(conn, v) for v in versions}
    if match_run is not None:
        match_run = {**match_run, "metadata": _parse_object(match_run.get("metadata"))}
    evaluation, problem = load_evaluation(evaluation_path)
    return ReportData(
        generated_at=now,
        database=engine_mod.redact(database_url),
        config_version=config.algorithm_version,
        config_hash=config.content_hash,
        weights={name: weights[name] / total for name in SUBSCORE_COLUMNS},
        buckets=buckets,
        match_run=match_run,
        runs=runs,
        freshness=freshness,
        evaluation=evaluation,
        evaluation_path=str(evaluation_path),
        evaluation_problem=problem,
    )


def _parse_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def load_evaluation(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The evaluation JSON, or ``None`` and a plain reason (absent, unreadable, not JSON)."""
    if not path.exists():
        return None, f"no evaluation yet ({path} does not exist; run `matchjobs evaluate`)"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"the evaluation file {path} could not be read: {exc}"
    if not isinstance(value, dict):
        return None, f"the evaluation file {path} is not a JSON object"
    return value, None


# ------------------------------------------------------------------------ derived figures


def score_histogram(buckets: pd.DataFrame, bins: int = BINS) -> pd.DataFrame:
    """Rows per bucket: index = bucket 0..bins-1, one column per version (zeros filled)."""
    table = buckets.pivot_table(
        index="bucket", columns="algorithm_version", values="n", aggfunc="sum", fill_value=0
    )
    return table.reindex(range(bins), fill_value=0).astype(np.int64)


def contributions(buckets: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    """Per version: weight × mean subscore per signal, plus ``mean_score`` and ``rows``."""
    sums = buckets.groupby("algorithm_version").sum(numeric_only=True)
    out = pd.DataFrame(
        {name: weights[name] * sums[f"sum_s_{name}"] / sums["n"] for name in SUBSCORE_COLUMNS}
    )
    out["mean_score"] = sums["sum_score"] / sums["n"]
    out["rows"] = sums["n"]
    return out


def funnel_panels(metadata: dict[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """(title, unit, {label: value}) per group of funnel-like numbers in a run's metadata.

    The match job's keys may change, so take what looks like a funnel: the numbers directly
    in ``funnel`` form the first panel and each dict inside it (candidates per source,
    removed per filter) one more; elsewhere only dicts of whole numbers (skipped rows per
    reason), since mixed dicts (audits, memory) would share one misleading axis. Timings
    (keys ending in ``_s``) come last. Top-level numbers stand in when there is no funnel.
    """
    counts: list[tuple[str, str, dict[str, float]]] = []
    timings: list[tuple[str, str, dict[str, float]]] = []

    def add(key: str, numbers: dict[str, float], whole_only: bool) -> None:
        if not numbers:
            return
        if key.endswith("_s"):
            timings.append((f"time: {key[:-2].replace('_', ' ')}", "seconds", numbers))
        elif not whole_only or all(isinstance(v, int) for v in numbers.values()):
            counts.append((key.replace("_", " "), "count", numbers))

    def visit(title: str, mapping: dict[str, Any], whole_only: bool) -> None:
        scalars = {k.replace("_", " "): v for k, v in mapping.items() if is_number(v)}
        add(title, scalars, whole_only)
        for key, value in mapping.items():
            if isinstance(value, dict):
                add(key, flat_numbers(value), whole_only)

    funnel = metadata.get("funnel")
    if isinstance(funnel, dict):
        visit("funnel", funnel, whole_only=False)
    rest = {k: v for k, v in metadata.items() if k != "funnel"}
    if not counts:
        visit("run totals", rest, whole_only=True)
    else:
        visit("other", {k: v for k, v in rest.items() if isinstance(v, dict)}, whole_only=True)
    return counts + timings


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def flat_numbers(mapping: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in mapping.items():
        label = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, dict):
            out.update(flat_numbers(value, f"{prefix}{key} / "))
        elif is_number(value):
            out[label] = value
    return out


def freshness_summary(frame: pd.DataFrame, now: dt.datetime) -> dict[str, Any]:
    """Counts and shares of active users with a fresh set, an outdated set, or none."""
    active = len(frame)
    has_set = int(frame["computed_at"].notna().sum())
    fresh = int(frame["fresh"].sum())
    ages_h = set_ages_hours(frame, now)
    return {
        "active_users": active,
        "with_set": has_set,
        "fresh": fresh,
        "outdated": has_set - fresh,
        "no_set": active - has_set,
        "fresh_share": fresh / active if active else 0.0,
        "oldest_hours": float(ages_h.max()) if ages_h.size else None,
        "median_hours": float(np.median(ages_h)) if ages_h.size else None,
    }


def set_ages_hours(frame: pd.DataFrame, now: dt.datetime) -> np.ndarray:
    computed = frame["computed_at"].dropna()
    return ((pd.Timestamp(now) - computed).dt.total_seconds() / 3600).to_numpy(np.float64)


def age_unit(hours: float) -> tuple[float, str]:
    """Hours per unit, and the unit's name, that reads best for ages up to ``hours``."""
    if hours > 72:
        return 24.0, "days"
    return (1.0, "hours") if hours >= 2 else (1 / 60, "minutes")
