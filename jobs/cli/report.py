"""The ``report`` subcommand: one self-contained HTML page of plots for the people who run this."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs import cli
from jobs.cli import evaluation as evaluation_cli


def cmd_report(env: cli.Env) -> int:
    from jobs.tools import report

    args = env.args
    summary = report.write_report(
        env.reader(),
        database_url=env.url,
        config=env.config,
        out_dir=Path(args.out),
        now=cli.utcnow(),
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


def define_report(p: argparse.ArgumentParser) -> cli.Handler:
    p.description = (
        "Write DIR/report.html: score distribution and subscore contributions per "
        "algorithm version, the last match run's filter funnel, job durations, coverage and "
        "staleness, and the offline evaluation's ROC curves when its file exists. Reads "
        "aggregates only; safe to run against production."
    )
    p.add_argument(
        "--out", default="report", metavar="DIR", help="output directory (default: report/)"
    )
    p.add_argument(
        "--evaluation",
        default=str(evaluation_cli.DEFAULT_OUT),
        metavar="FILE",
        help=f"JSON written by `matchjobs evaluate` (default: {evaluation_cli.DEFAULT_OUT})",
    )
    cli.add_json(p, "the written path and summary")
    return cmd_report
