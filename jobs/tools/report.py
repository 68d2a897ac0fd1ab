"""The operator's HTML report: one self-contained page of plots about scores, runs and freshness.

Reads only (``match_scores``, ``job_runs``, ``users`` and the signal tables' timestamps, through
aggregate queries in :mod:`jobs.storage.api`) plus the JSON file ``matchjobs evaluate`` writes.
Writes one file, ``<out>/report.html``, with every plot embedded as a base64 PNG.

Three steps, kept apart, in three modules: :func:`jobs.tools.report_data.gather` reads
everything into a ``ReportData``; the ``plot_*`` functions of :mod:`jobs.tools.report_plots`
turn it into PNG bytes (``None`` when there is nothing to draw); :func:`render_html`, here,
lays out the page and :func:`write_report` runs the three.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobs import config as config_mod
from jobs.errors import ConfigError
from jobs.storage import engine as engine_mod
from jobs.tools import report_data, report_plots

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"


# ------------------------------------------------------------------------------ the page


@dataclasses.dataclass(frozen=True)
class Section:
    key: str
    title: str
    caption: str
    plot: Callable[[report_data.ReportData], bytes | None]
    empty: str  # shown instead of the plot when there is nothing to draw


SECTIONS = (
    Section(
        "scores",
        "Score distribution",
        "Share of stored suggestions (rows of match_scores) per score bucket of width 0.02, "
        "one line per algorithm version; the dashed line is the version's mean. A version "
        "whose mass sits far left serves weak suggestions.",
        report_plots.plot_scores,
        "No scores yet: match_scores is empty (run `matchjobs run match`).",
    ),
    Section(
        "report_data.contributions",
        "Subscore report_data.contributions",
        "Each signal's weight × its subscore, averaged over the kept rows of each version: "
        "how much of the score each signal provides. Weights are the current config's "
        "(normalized to sum to 1); for another version, pass its experiment file with "
        "`--config` to see its own. A plain weighted sum ends at the diamond (mean final "
        "score); a gap means other weights, or reciprocal fusion, dormancy or exposure "
        "factors moved the scores.",
        report_plots.plot_contributions,
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
        report_plots.plot_funnel,
        "No funnel: there is no succeeded match run, or it recorded no counts.",
    ),
    Section(
        "durations",
        "Job durations over time",
        "Wall-clock time of each run over time, per job, coloured by what triggered it; red "
        "crosses are failed or abandoned runs (runs with warnings count as succeeded). A "
        "rising line is a job slowing down; the y-axis turns logarithmic "
        "when event runs and nightly runs differ by more than 100×.",
        report_plots.plot_durations,
        "No runs recorded yet in job_runs.",
    ),
    Section(
        "freshness",
        "Coverage and staleness",
        "Left: share of active users whose set is fresh (no signal of theirs changed since "
        "it was computed), outdated (a quiz, interest or rating signal is newer), or "
        "missing. Right: how old each active user's set is at report time.",
        report_plots.plot_freshness,
        "No active users.",
    ),
    Section(
        "evaluation",
        "Offline evaluation",
        "ROC curves on the hidden pairs from `matchjobs evaluate`: a curve higher and further "
        "left ranks true matches above non-matches more often. Solid lines are configs, "
        "dashed ones baselines; the dotted diagonal is a random order (AUC 0.5).",
        report_plots.plot_roc,
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
    if report_data.is_number(value):
        return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if report_data.is_number(c) else ""}">{_e(_fmt(c))}</td>' for c in row
        )
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


def _header(data: report_data.ReportData) -> str:
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


def _funnel_details(data: report_data.ReportData) -> str:
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
                    f"{v:g}" if report_data.is_number(v) else "–"
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


def _freshness_table(data: report_data.ReportData) -> str:
    rows = []
    for version, frame in data.freshness.items():
        s = report_data.freshness_summary(frame, data.generated_at)
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


def _hours(hours: float | None) -> str:
    if hours is None:
        return "–"
    per_unit, unit = report_data.age_unit(hours)
    return f"{hours / per_unit:.1f} {unit}"


def _evaluation_details(data: report_data.ReportData) -> str:
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
    entries = report_plots.evaluation_entries(ev)
    flat = [
        report_data.flat_numbers(e["metrics"]) if isinstance(e.get("metrics"), dict) else {}
        for e, _ in entries
    ]
    metric_names = list(dict.fromkeys(k for metrics in flat for k in metrics))
    rows = [
        [
            report_plots.entry_name(e),
            "baseline" if baseline else "config",
            e.get("algorithm_version", ""),
            e.get("config_hash", ""),
            report_plots.on_off(e.get("reciprocal")),
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


def render_html(data: report_data.ReportData, images: dict[str, bytes | None]) -> str:
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
    evaluation_path: Path = report_data.DEFAULT_EVALUATION,
) -> dict[str, Any]:
    """Gather, plot and write ``out_dir/report.html``; return what was written."""
    data = report_data.gather(
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
