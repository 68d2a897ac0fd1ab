"""The report's plots: each ``plot_*`` turns a :class:`jobs.tools.report_data.ReportData`
into PNG bytes, or ``None`` when there is nothing to draw. matplotlib lives here only.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI warnings

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
from matplotlib.figure import Figure

from jobs.storage.schema import SUBSCORE_COLUMNS
from jobs.tools import report_data

_COLORS = plt.get_cmap("tab10").colors
# Red means a failure (a failed run in the durations plot); counts never take it.
_PANEL_COLORS = tuple(c for i, c in enumerate(_COLORS) if i != 3)


# ------------------------------------------------------------------------------ plotting


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def plot_scores(data: report_data.ReportData) -> bytes | None:
    if data.buckets.empty:
        return None
    hist = report_data.score_histogram(data.buckets)
    means = report_data.contributions(data.buckets, data.weights)["mean_score"]
    edges = np.linspace(0.0, 1.0, report_data.BINS + 1)
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


def plot_contributions(data: report_data.ReportData) -> bytes | None:
    if data.buckets.empty:
        return None
    table = report_data.contributions(data.buckets, data.weights)
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


def plot_funnel(data: report_data.ReportData) -> bytes | None:
    panels = report_data.funnel_panels(data.match_run["metadata"]) if data.match_run else []
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


def plot_durations(data: report_data.ReportData) -> bytes | None:
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
        ax.set_title(
            f"{job}: {len(mine)} run{'' if len(mine) == 1 else 's'}{tail}", loc="left", fontsize=11
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="trigger")
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(bottom.xaxis.get_major_locator()))
    bottom.set_xlabel("run start (UTC)")
    fig.suptitle("Job durations over time")
    return _png(fig)


def plot_freshness(data: report_data.ReportData) -> bytes | None:
    summaries = {
        v: report_data.freshness_summary(f, data.generated_at) for v, f in data.freshness.items()
    }
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
    ages = {v: report_data.set_ages_hours(f, data.generated_at) for v, f in data.freshness.items()}
    longest = max((float(a.max()) for a in ages.values() if a.size), default=0.0)
    per_unit, unit = report_data.age_unit(longest)
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
    for entry, baseline in evaluation_entries(evaluation):
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


def evaluation_entries(evaluation: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    out = []
    for key, baseline in (("configs", False), ("baselines", True)):
        items = evaluation.get(key)
        out += [
            (e, baseline) for e in (items if isinstance(items, list) else []) if isinstance(e, dict)
        ]
    return out


def entry_name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("algorithm_version") or "unnamed")


def on_off(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else ""


def _label(entry: dict[str, Any]) -> str:
    fusion = on_off(entry.get("reciprocal"))
    return f"{entry_name(entry)}, reciprocal {fusion}" if fusion else entry_name(entry)


def _metric_auc(entry: dict[str, Any], kind: str) -> float | None:
    metrics = entry.get("metrics")
    flat = report_data.flat_numbers(metrics) if isinstance(metrics, dict) else {}
    for key, value in flat.items():
        if "auc" in key.lower() and kind.replace("_", " ").lower() in key.lower():
            return value
    return None


_ROC_KINDS = {"mutual": "mutual like (both said yes)", "like": "the viewer liked the candidate"}


def plot_roc(data: report_data.ReportData) -> bytes | None:
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
