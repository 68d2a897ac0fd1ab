"""The ``report`` subcommand: one self-contained HTML page of plots for the people who run this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs import cli, runner
from jobs.tools import report


def cmd_report(env: cli.Env) -> int:
    args = env.args
    summary = report.write_report(
        env.engine,
        database_url=env.url,
        config=env.config,
        out_dir=Path(args.out),
        now=runner.utcnow(),
        evaluation_path=Path(args.evaluation),
    )
    missing = ", ".join(summary["missing"]) or "none"
    cli.emit(
        args,
        f"report written to {summary['path']}: {len(summary['plots'])} plots "
        f"(without data: {missing}); open it in a browser",
        summary,
    )
    return 0


def register(sub: Any, handlers: dict[str, cli.Handler]) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report with plots (scores, funnel, runs, freshness)",
        description="Write DIR/report.html: score distribution and subscore contributions per "
        "algorithm version, the last match run's filter funnel, job durations, coverage and "
        "staleness, and the offline evaluation's ROC curves when its file exists. Reads "
        "aggregates only; safe to run against production.",
    )
    p.add_argument(
        "--out", default="report", metavar="DIR", help="output directory (default: report/)"
    )
    p.add_argument(
        "--evaluation",
        default=str(report.DEFAULT_EVALUATION),
        metavar="FILE",
        help=f"JSON written by `matchjobs evaluate` (default: {report.DEFAULT_EVALUATION})",
    )
    p.add_argument("--json", action="store_true", help="print the written path and summary as JSON")
    handlers["report"] = cmd_report
