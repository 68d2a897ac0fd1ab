"""The operator's HTML report: one self-contained page of plots about scores, runs and freshness.

Reads only (``match_scores``, ``job_runs``, ``users`` and the signal tables' timestamps, through
aggregate queries in :mod:`jobs.storage.api`) plus the JSON file ``matchjobs evaluate`` writes.
Writes one file, ``<out>/report.html``, with every plot embedded as a base64 PNG.

Three steps, kept apart: :func:`gather` reads everything into a :class:`ReportData`; the
``plot_*`` functions turn it into PNG bytes (``None`` when there is nothing to draw);
:func:`render_html` lays out the page.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI warnings

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import sqlalchemy as sa
from matplotlib.figure import Figure

from jobs import config as config_mod
from jobs.errors import ConfigError
from jobs.storage import api
from jobs.storage import engine as engine_mod
from jobs.storage.schema import SUBSCORE_COLUMNS

logger = logging.getLogger(__name__)

BINS = 50
DEFAULT_EVALUATION = Path("reports/evaluation.json")
REPORT_FILE = "report.html"
_COLORS = plt.get_cmap("tab10").colors
# Red means a failure (a failed run in the durations plot); counts never take it.
_PANEL_COLORS = tuple(c for i, c in enumerate(_COLORS) if i != 3)


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
        scalars = {k.replace("_", " "): v for k, v in mapping.items() if _is_number(v)}
        add(title, scalars, whole_only)
        for key, value in mapping.items():
            if isinstance(value, dict):
                add(key, _numbers(value), whole_only)

    funnel = metadata.get("funnel")
    if isinstance(funnel, dict):
        visit("funnel", funnel, whole_only=False)
    rest = {k: v for k, v in metadata.items() if k != "funnel"}
    if not counts:
        visit("run totals", rest, whole_only=True)
    else:
        visit("other", {k: v for k, v in rest.items() if isinstance(v, dict)}, whole_only=True)
    return counts + timings


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _numbers(mapping: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in mapping.items():
        label = f"{prefix}{key}".replace("_", " ")
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key} / "))
        elif _is_number(value):
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


# ------------------------------------------------------------------------------ plotting


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def plot_scores(data: ReportData) -> bytes | None:
    if data.buckets.empty:
        return None
    hist = score_histogram(data.buckets)
    means = contributions(data.buckets, data.weights)["mean_score"]
    edges = np.linspace(0.0, 1.0, BINS + 1)
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    for i, version in enumerate(hist.columns):
        counts = hist[version].to_numpy(np.float64)
        color = _COLORS[i % len(_COLORS)]
        label = f"{version}: {int(counts.sum()):,} rows, mean {means[version]:.3f}"
        ax.stairs(100 * counts / counts.sum(), edges, label=label, color=color, linewidth=2)
        ax.axvline(means[version], color=color, linestyle="--", linewidth=1)
    # Fit the scores, not the whole [0, 1] scale: a narrow distribution must stay readable.
    filled = np.flatnonzero(hist.to_numpy(np.float64).sum(axis=1) > 0)
    if filled.size:
        low, high = edges[filled[0]], edges[filled[-1] + 1]
        pad = max(0.02, 0.05 * (high - low))
        ax.set_xlim(max(0.0, low - pad), min(1.0, high + pad))
    ax.set_xlabel("score (0 = worst, 1 = best; axis fitted to the scores)")
    ax.set_ylabel("share of the version's rows (%)")
    ax.set_title("Score distribution per algorithm version (dashed: mean)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _png(fig)


def plot_contributions(data: ReportData) -> bytes | None:
    if data.buckets.empty:
        return None
    table = contributions(data.buckets, data.weights)
    fig, ax = plt.subplots(figsize=(9, 2.4 + 0.7 * len(table)), layout="constrained")
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for i, name in enumerate(SUBSCORE_COLUMNS):
        widths = table[name].to_numpy(np.float64)
        label = f"{name.replace('_', ' ')} (weight {data.weights[name]:.2f})"
        bars = ax.barh(
            y, widths, left=left, color=_COLORS[i % len(_COLORS)], label=label, height=0.6
        )
        ax.bar_label(
            bars, labels=[f"{w:.2f}" if w >= 0.04 else "" for w in widths], label_type="center"
        )
        left += widths
    ax.scatter(
        table["mean_score"], y, marker="D", color="black", zorder=3, label="mean final score"
    )
    # Only the current config's weights are known; other versions are drawn with them, and say so.
    labels = [
        f"{v}\n({int(n):,} rows)" + ("" if v == data.config_version else "\nweights: current")
        for v, n in zip(table.index, table["rows"], strict=True)
    ]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, min(1.0, max(float(left.max()), float(table["mean_score"].max())) * 1.15))
    ax.set_xlabel("mean contribution to the score (weight × subscore, score units 0–1)")
    ax.set_title("What the scores are made of: weighted subscores averaged over kept rows")
    fig.legend(loc="outside lower center", ncol=4, fontsize=9)
    return _png(fig)


def plot_funnel(data: ReportData) -> bytes | None:
    panels = funnel_panels(data.match_run["metadata"]) if data.match_run else []
    if not panels:
        return None
    panels = split_users_from_pairs(panels)
    panels = panels[:8]
    n_rows = (len(panels) + 1) // 2
    sizes = [len(values) for _, _, values in panels] + [0]
    heights = [0.8 + 0.3 * max(sizes[2 * r], sizes[2 * r + 1]) for r in range(n_rows)]
    fig, axes = plt.subplots(
        n_rows,
        2,
        figsize=(11, sum(heights) + 0.3),
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for i, (ax, (title, unit, values)) in enumerate(zip(axes.flat, panels, strict=False)):
        # A funnel narrows: biggest stage on top (metadata is sorted JSON, its order is lost).
        items = sorted(values.items(), key=lambda kv: -kv[1])
        numbers = np.array([v for _, v in items], dtype=np.float64)
        bars = ax.barh([k for k, _ in items], numbers, color=_PANEL_COLORS[i % len(_PANEL_COLORS)])
        fmt = "{:,.2f}" if unit == "seconds" else "{:,.0f}"
        ax.bar_label(bars, labels=[fmt.format(v) for v in numbers], padding=3, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max(float(numbers.max()), 1.0) * 1.25)
        ax.xaxis.set_major_locator(mticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(mticker.EngFormatter(sep=""))
        ax.set_xlabel(unit)
        ax.set_title(title, loc="left", fontsize=11)
    return _png(fig)


def split_users_from_pairs(
    panels: list[tuple[str, str, dict[str, float]]],
) -> list[tuple[str, str, dict[str, float]]]:
    """Counts of users apart from counts of pairs or rows: on one axis, ~2k users next to
    ~200k pairs would be invisible bars."""
    out = []
    for title, unit, values in panels:
        users = {k: v for k, v in values.items() if "users" in k.split()}
        rest = {k: v for k, v in values.items() if k not in users}
        if unit == "count" and users and rest:
            out += [
                (f"{title}: pairs and rows", "pairs / rows", rest),
                (f"{title}: users", "users", users),
            ]
        else:
            out.append((title, unit, values))
    return out


def plot_durations(data: ReportData) -> bytes | None:
    runs = data.runs
    if runs.empty:
        return None
    jobs = sorted(runs["job_name"].astype(str).unique())
    triggers = sorted(runs["trigger"].astype(str).unique())
    fig, axes = plt.subplots(
        len(jobs),
        1,
        figsize=(9, 1.2 + 1.8 * len(jobs)),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, job in zip(axes[:, 0], jobs, strict=True):
        mine = runs[runs["job_name"] == job]
        when = mine["started_at"].dt.tz_convert("UTC").dt.tz_localize(None)
        seconds = mine["duration_ms"].astype(np.float64) / 1000
        # A run with warnings succeeded; failed and abandoned ones are the failures marked.
        ok = mine["status"].isin(["succeeded", "succeeded_with_warnings"]).to_numpy()
        failed = mine["status"].isin(["failed", "abandoned"]).to_numpy()
        for i, trigger in enumerate(triggers):
            pick = ok & (mine["trigger"] == trigger).to_numpy()
            if pick.any():
                # Whole-population runs form a trend; event runs are scattered one-user runs.
                style = "o-" if trigger in ("nightly", "backfill") else "o"
                ax.plot(
                    when[pick],
                    seconds[pick],
                    style,
                    color=_COLORS[i],
                    ms=4,
                    lw=1,
                    label=f"{trigger} ({int(pick.sum())})",
                )
        if failed.any():
            ax.plot(
                when[failed],
                seconds[failed],
                "x",
                color="red",
                ms=8,
                mew=2,
                label=f"failed ({int(failed.sum())})",
            )
        positive = seconds[seconds > 0]
        if positive.size and positive.max() / positive.min() > 100:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        else:
            ax.set_ylim(bottom=0)
        full = ok & (mine["scope"] == "all").to_numpy()
        if full.any():
            tail = f", last whole-population run took {seconds[full].iloc[-1]:,.1f} s"
        else:
            tail = "" if ok.any() else ", none succeeded"
        ax.set_ylabel("seconds")
        ax.set_title(f"{job}: {len(mine)} runs{tail}", loc="left", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="trigger")
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(bottom.xaxis.get_major_locator()))
    bottom.set_xlabel("run start (UTC)")
    fig.suptitle("Job durations over time")
    return _png(fig)


def plot_freshness(data: ReportData) -> bytes | None:
    summaries = {v: freshness_summary(f, data.generated_at) for v, f in data.freshness.items()}
    if not summaries or all(s["active_users"] == 0 for s in summaries.values()):
        return None
    versions = list(summaries)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 1.8 + 0.5 * len(versions)), layout="constrained"
    )
    y = np.arange(len(versions))
    start = np.zeros(len(versions))
    parts = (
        ("fresh", "fresh set", "#2ca02c"),
        ("outdated", "outdated (signals changed since)", "#ff7f0e"),
        ("no_set", "no set", "#7f7f7f"),
    )
    for key, label, color in parts:
        share = np.array(
            [
                100 * s[key] / s["active_users"] if s["active_users"] else 0.0
                for s in summaries.values()
            ]
        )
        bars = left.barh(y, share, left=start, color=color, label=label, height=0.6)
        left.bar_label(
            bars, labels=[f"{p:.0f}%" if p >= 6 else "" for p in share], label_type="center"
        )
        start += share
    left.set_yticks(y, versions)
    left.invert_yaxis()
    left.set_xlim(0, 100)
    left.set_xlabel("share of active users (%)")
    left.set_title("Coverage", loc="left")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8)
    ages = {v: set_ages_hours(f, data.generated_at) for v, f in data.freshness.items()}
    longest = max((float(a.max()) for a in ages.values() if a.size), default=0.0)
    per_unit, unit = _age_unit(longest)
    edges = np.linspace(0.0, max(longest / per_unit, 1e-9), 31)
    for i, (version, hours) in enumerate(ages.items()):
        if hours.size:
            right.hist(
                hours / per_unit, bins=edges, histtype="step", lw=2, color=_COLORS[i], label=version
            )
    right.set_xlabel(f"age of the user's set ({unit})")
    right.set_ylabel("active users")
    right.set_title("Staleness: age of each set", loc="left")
    right.grid(alpha=0.3)
    if any(a.size for a in ages.values()):
        right.legend(fontsize=8)
    return _png(fig)


def roc_curves(evaluation: dict[str, Any]) -> dict[str, list[tuple[str, bool, Any, Any, float]]]:
    """Per ROC kind (``mutual`` first): (name, is_baseline, fpr, tpr, auc) of every entry."""
    curves: dict[str, list[tuple[str, bool, Any, Any, float]]] = {}
    for entry, baseline in _entries(evaluation):
        roc = entry.get("roc")
        for kind, curve in roc.items() if isinstance(roc, dict) else ():
            if not isinstance(curve, dict):
                continue
            try:
                fpr = np.asarray(curve.get("fpr", []), dtype=np.float64)
                tpr = np.asarray(curve.get("tpr", []), dtype=np.float64)
            except (TypeError, ValueError):
                continue
            if fpr.ndim != 1 or fpr.size < 2 or fpr.shape != tpr.shape:
                continue
            auc = _metric_auc(entry, str(kind))
            if auc is None:
                auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
            curves.setdefault(str(kind), []).append((_label(entry), baseline, fpr, tpr, auc))
    return dict(sorted(curves.items(), key=lambda kv: kv[0] != "mutual"))


def _entries(evaluation: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    out = []
    for key, baseline in (("configs", False), ("baselines", True)):
        items = evaluation.get(key)
        out += [
            (e, baseline) for e in (items if isinstance(items, list) else []) if isinstance(e, dict)
        ]
    return out


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("algorithm_version") or "unnamed")


def _on_off(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else ""


def _label(entry: dict[str, Any]) -> str:
    on_off = _on_off(entry.get("reciprocal"))
    return f"{_name(entry)}, reciprocal {on_off}" if on_off else _name(entry)


def _metric_auc(entry: dict[str, Any], kind: str) -> float | None:
    metrics = entry.get("metrics")
    flat = _numbers(metrics) if isinstance(metrics, dict) else {}
    for key, value in flat.items():
        if "auc" in key.lower() and kind.replace("_", " ").lower() in key.lower():
            return value
    return None


_ROC_KINDS = {"mutual": "mutual like (both said yes)", "like": "the viewer liked the candidate"}


def plot_roc(data: ReportData) -> bytes | None:
    curves = roc_curves(data.evaluation) if data.evaluation else {}
    if not curves:
        return None
    kinds = list(curves)[:3]
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(4.6 * len(kinds) + 1, 4.8), layout="constrained", squeeze=False
    )
    for ax, kind in zip(axes[0], kinds, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance (0.500)")
        for i, (name, baseline, fpr, tpr, auc) in enumerate(curves[kind]):
            style = "--" if baseline else "-"
            ax.plot(
                fpr,
                tpr,
                style,
                color=_COLORS[i % len(_COLORS)],
                linewidth=1.5 if baseline else 2.2,
                label=f"{name}{' (baseline)' if baseline else ''}: AUC {auc:.3f}",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (share of negative pairs above the threshold)")
        ax.set_ylabel("true positive rate (share of positive pairs above the threshold)")
        ax.set_title(f"ROC: {_ROC_KINDS.get(kind, kind.replace('_', ' '))}", loc="left")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for ax in axes[0]:
        ax.xaxis.label.set_fontsize(8)
    return _png(fig)


# ------------------------------------------------------------------------------ the page


@dataclasses.dataclass(frozen=True)
class Section:
    key: str
    title: str
    caption: str
    plot: Callable[[ReportData], bytes | None]
    empty: str  # shown instead of the plot when there is nothing to draw


SECTIONS = (
    Section(
        "scores",
        "Score distribution",
        "Share of stored suggestions (rows of match_scores) per score bucket of width 0.02, "
        "one line per algorithm version; the dashed line is the version's mean. A version "
        "whose mass sits far left serves weak suggestions.",
        plot_scores,
        "No scores yet: match_scores is empty (run `matchjobs run match`).",
    ),
    Section(
        "contributions",
        "Subscore contributions",
        "Each signal's weight × its subscore, averaged over the kept rows of each version: "
        "how much of the score each signal provides. Weights are the current config's "
        "(normalized to sum to 1); for another version, pass its experiment file with "
        "`--config` to see its own. A plain weighted sum ends at the diamond (mean final "
        "score); a gap means other weights, or reciprocal fusion, dormancy or exposure "
        "factors moved the scores.",
        plot_contributions,
        "No scores yet: nothing to decompose.",
    ),
    Section(
        "funnel",
        "Filter funnel of the last match run",
        "Counts recorded by the newest succeeded match run (a whole-population run when "
        "there is one): candidates per source, pairs removed by each hard filter, pairs "
        "scored and kept, rows written; counts of users on their own axis, apart from pairs "
        "and rows; users kept without a location (neutral proximity) under 'kept'. Bars are "
        "sorted largest first.",
        plot_funnel,
        "No funnel: there is no succeeded match run, or it recorded no counts.",
    ),
    Section(
        "durations",
        "Job durations over time",
        "Wall-clock time of each run over time, per job, coloured by what triggered it; red "
        "crosses are failed or abandoned runs (runs with warnings count as succeeded). A "
        "rising line is a job slowing down; the y-axis turns logarithmic "
        "when event runs and nightly runs differ by more than 100×.",
        plot_durations,
        "No runs recorded yet in job_runs.",
    ),
    Section(
        "freshness",
        "Coverage and staleness",
        "Left: share of active users whose set is fresh (no signal of theirs changed since "
        "it was computed), outdated (a quiz, interest or rating signal is newer), or "
        "missing. Right: how old each active user's set is at report time.",
        plot_freshness,
        "No active users.",
    ),
    Section(
        "evaluation",
        "Offline evaluation",
        "ROC curves on the hidden pairs from `matchjobs evaluate`: a curve higher and further "
        "left ranks true matches above non-matches more often. Solid lines are configs, "
        "dashed ones baselines; the dotted diagonal is a random order (AUC 0.5).",
        plot_roc,
        "The evaluation file has no ROC curves.",
    ),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
 padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0} td,th{padding:.25em .7em;
 border-bottom:1px solid #eee;text-align:left} th{background:#f5f5f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.caption{color:#444;max-width:60em} .empty{color:#8a6d3b;background:#fcf8e3;padding:.6em 1em}
img{max-width:100%;height:auto} .wide{overflow-x:auto} nav a{margin-right:1em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if _is_number(value):
        return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if _is_number(c) else ""}">{_e(_fmt(c))}</td>' for c in row)
        + "</tr>"
        for row in rows
    )
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def _facts(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(alt)}">'


def _header(data: ReportData) -> str:
    rows_per_version = data.buckets.groupby("algorithm_version")["n"].sum()
    versions = ", ".join(f"{v} ({int(n):,} rows)" for v, n in rows_per_version.items()) or "none"
    return _facts(
        [
            ("database", data.database),
            ("generated", f"{data.generated_at:%Y-%m-%d %H:%M:%S} UTC"),
            ("versions in match_scores", versions),
            ("current config", f"{data.config_version} (config hash {data.config_hash})"),
            ("evaluation file", data.evaluation_path),
        ]
    )


def _funnel_details(data: ReportData) -> str:
    run = data.match_run
    if run is None:
        return ""
    started = run["started_at"]
    seconds = None if run["duration_ms"] is None else run["duration_ms"] / 1000
    return (
        f'<p class="caption">Run {_e(run["id"])}: scope {_e(run["scope"])}, trigger '
        f"{_e(run['trigger'])}, version {_e(run['algorithm_version'])}, started "
        f"{_e(f'{started:%Y-%m-%d %H:%M} UTC' if started else '?')}"
        + (f", took {seconds:,.1f} s." if seconds is not None else ".")
        + "</p>"
        + _exposure_details(run["metadata"].get("exposure"))
    )


def _exposure_details(exposure: Any) -> str:
    """How the run's lists spread over the users (``exposure`` of the match figures)."""
    if not isinstance(exposure, dict):
        return ""
    share = exposure.get("never_suggested_share")
    over = "every list of the run" if exposure.get("over") == "all_lists" else "the lists written"
    return "<h3>Exposure</h3>" + _facts(
        [
            ("over", f"{over} ({_fmt(exposure.get('users'))} users who could be suggested)"),
            ("suggested to no one", "–" if share is None else f"{100 * share:.1f}%"),
            (
                "lists a user is in: p50 / p99 / max",
                " / ".join(
                    f"{v:g}" if _is_number(v) else "–"
                    for v in (
                        exposure.get(k)
                        for k in ("appearances_p50", "appearances_p99", "appearances_max")
                    )
                ),
            ),
            ("mean", _fmt(exposure.get("appearances_mean"))),
            ("Gini (0 = even)", _fmt(exposure.get("gini"))),
        ]
    )


def _freshness_table(data: ReportData) -> str:
    rows = []
    for version, frame in data.freshness.items():
        s = freshness_summary(frame, data.generated_at)
        rows.append(
            [
                version,
                s["active_users"],
                s["with_set"],
                s["fresh"],
                f"{100 * s['fresh_share']:.1f}%",
                _hours(s["median_hours"]),
                _hours(s["oldest_hours"]),
            ]
        )
    header = ["version", "active users", "with a set", "fresh", "fresh share"]
    return _table([*header, "median set age", "oldest set age"], rows)


def _age_unit(hours: float) -> tuple[float, str]:
    """Hours per unit, and the unit's name, that reads best for ages up to ``hours``."""
    if hours > 72:
        return 24.0, "days"
    return (1.0, "hours") if hours >= 2 else (1 / 60, "minutes")


def _hours(hours: float | None) -> str:
    if hours is None:
        return "–"
    per_unit, unit = _age_unit(hours)
    return f"{hours / per_unit:.1f} {unit}"


def _evaluation_details(data: ReportData) -> str:
    ev = data.evaluation
    if ev is None:
        return ""
    database = ev.get("database")
    facts = [
        ("created", ev.get("created_at", "?")),
        ("database", engine_mod.redact(str(database)) if database else "?"),
        ("hidden fraction", ev.get("hidden_fraction", "?")),
        ("hidden pairs", ev.get("n_hidden_pairs", "?")),
        ("seed", ev.get("seed", "?")),
    ]
    entries = _entries(ev)
    flat = [
        _numbers(e["metrics"]) if isinstance(e.get("metrics"), dict) else {} for e, _ in entries
    ]
    metric_names = list(dict.fromkeys(k for metrics in flat for k in metrics))
    rows = [
        [
            _name(e),
            "baseline" if baseline else "config",
            e.get("algorithm_version", ""),
            e.get("config_hash", ""),
            _on_off(e.get("reciprocal")),
            *(metrics.get(k) for k in metric_names),
        ]
        for (e, baseline), metrics in zip(entries, flat, strict=True)
    ]
    header = ["name", "kind", "version", "config hash", "reciprocal", *metric_names]
    table = _table(header, rows) if rows else '<p class="empty">No configs in the file.</p>'
    sentences = [str(e["summary"]) for e, _ in entries if e.get("summary")]
    summary = "".join(f"<li>{_e(t)}</li>" for t in sentences)
    return (
        _facts(facts)
        + (f"<ul>{summary}</ul>" if summary else "")
        + "<h3>Metrics on the hidden pairs</h3>"
        + table
    )


def render_html(data: ReportData, images: dict[str, bytes | None]) -> str:
    """The whole page; ``images`` maps a section key to its PNG (``None``: nothing to draw)."""
    nav = "".join(f'<a href="#{s.key}">{_e(s.title)}</a>' for s in SECTIONS)
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>matchjobs report {data.generated_at:%Y-%m-%d %H:%M}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>matchjobs report</h1>",
        _header(data),
        f"<nav>{nav}</nav>",
    ]
    extras = {
        "funnel": _funnel_details(data),
        "freshness": _freshness_table(data),
        "evaluation": _evaluation_details(data),
    }
    for s in SECTIONS:
        parts.append(f'<section id="{s.key}"><h2>{_e(s.title)}</h2>')
        png = images.get(s.key)
        if s.key == "evaluation" and data.evaluation is None:
            parts.append(f'<p class="empty">{_e(data.evaluation_problem)}</p>')
        elif png is None:
            parts.append(f'<p class="empty">{_e(s.empty)}</p>')
        else:
            parts.append(f'<p class="caption">{_e(s.caption)}</p>{_img(png, s.title)}')
        parts.append(extras.get(s.key, "") + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    engine: sa.Engine,
    *,
    database_url: str,
    config: config_mod.Config,
    out_dir: Path,
    now: dt.datetime,
    evaluation_path: Path = DEFAULT_EVALUATION,
) -> dict[str, Any]:
    """Gather, plot and write ``out_dir/report.html``; return what was written."""
    data = gather(
        engine, database_url=database_url, config=config, now=now, evaluation_path=evaluation_path
    )
    images = {s.key: s.plot(data) for s in SECTIONS}
    page = render_html(data, images)
    path = out_dir / REPORT_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot write {REPORT_FILE}: {exc.strerror}") from exc
    logger.info("report written to %s", path, extra={"action": "report.write", "path": str(path)})
    return {
        "path": str(path),
        "bytes": len(page.encode("utf-8")),
        "versions": data.versions,
        "plots": [key for key, png in images.items() if png is not None],
        "missing": [key for key, png in images.items() if png is None],
        "evaluation": data.evaluation is not None,
    }
