"""The ``matchjobs evaluate`` subcommand: compare configs offline against observed decisions.

Parses arguments, loads the configs, calls :func:`jobs.tools.evaluate.evaluate`, writes the result
JSON and prints a side-by-side table (or the JSON with ``--json``). No computation, no SQL.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import cli
from jobs.cli import data as data_cli
from jobs.errors import ConfigError

if TYPE_CHECKING:
    from jobs.tools import evaluate

DEFAULT_OUT = Path("reports") / "evaluation.json"

DESCRIPTION = """\
Hide a seeded share of the observed decision pairs (their likes/passes and ratings, both
directions), rebuild the signal tables without them in a scratch database, score every hidden
pair in both directions with each config (reciprocal fusion on and off) and measure: pooled AUC
for a mutual like and for a one-sided like, precision/recall/NDCG at k per viewer, and per
viewer AUC and NDCG@k (within each viewer's rows, over viewers with a positive and a negative).
Baselines (random, rating quality alone, one-sided like rates a.given x b.received, reciprocal
popularity; like rates from the visible decisions only) are measured on the same pairs. The
source database is only read.

Configs: the reference is configs/default.yaml with the global --config files merged over it
(named "default"; leave it out with --no-default). Each --candidate FILE is another config,
merged over that same reference and named after the file. Example:

  matchjobs --db sqlite:///matchjobs.db evaluate \\
      --candidate configs/experiments/quiz-heavy.yaml \\
      --candidate configs/experiments/reciprocal.yaml

Prints one row per config (reciprocal on and off; * marks the setting the config would serve)
and per baseline, and a plain sentence per config. The full result is written to --out as
JSON: the sample (hidden_fraction, seed, k, pair counts), then per config its metrics, the 95%
bootstrap interval of AUC mutual, ROC points and its lead over each baseline, then the
baselines' metrics and notes. `matchjobs report` draws its ROC curves. Each field is
described in jobs/tools/evaluate.py (RESULT_SCHEMA).
"""

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("auc_mutual", "AUC mutual"),
    ("auc_like", "AUC like"),
    ("precision_at_k_mutual", "P@k mutual"),
    ("recall_at_k_mutual", "R@k mutual"),
    ("ndcg_at_k_mutual", "NDCG@k mutual"),
    ("ndcg_at_k_like", "NDCG@k like"),
    ("viewer_auc_mutual", "vAUC mutual"),
    ("viewer_auc_like", "vAUC like"),
    ("viewer_ndcg_at_k_like", "vNDCG@k like"),
)


def _candidates(env: cli.Env) -> list[evaluate.Candidate]:
    from jobs import config as config_mod
    from jobs.tools import evaluate

    args = env.args
    base_files = list(args.config or ())
    found: list[evaluate.Candidate] = []
    if not args.no_default:
        found.append(evaluate.Candidate("default", "default", env.config))
    for path in args.candidate or ():
        name = Path(path).stem
        taken = {c.name for c in found}
        suffix = 2
        while name in taken:
            name = f"{Path(path).stem}-{suffix}"
            suffix += 1
        found.append(evaluate.Candidate(name, path, config_mod.load_config([*base_files, path])))
    if not found:
        raise ConfigError("nothing to evaluate: --no-default needs at least one --candidate FILE")
    return found


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def table(result: dict[str, Any]) -> str:
    """The configs and baselines side by side, one row each."""
    import pandas as pd

    rows = []
    for entry in result["configs"]:
        rows.append(
            {
                "config": entry["name"],
                "reciprocal": ("on" if entry["reciprocal"] else "off")
                + ("*" if entry["served"] else ""),
                "version": entry["algorithm_version"],
                "hash": entry["config_hash"],
                **{title: _fmt(entry["metrics"][key]) for key, title in TABLE_COLUMNS},
            }
        )
    for entry in result["baselines"]:
        rows.append(
            {
                "config": f"[baseline] {entry['name']}",
                "reciprocal": "",
                "version": "",
                "hash": "",
                **{title: _fmt(entry["metrics"][key]) for key, title in TABLE_COLUMNS},
            }
        )
    return pd.DataFrame(rows).to_string(index=False)


def cmd_evaluate(env: cli.Env) -> int:
    from jobs.tools import evaluate

    args = env.args
    candidates = _candidates(env)  # a bad config stops here, before anything is read
    now = None if args.now is None else cli.parse_now(args.now)
    if env.as_of is not None:
        if now is not None and now != env.as_of:
            raise ConfigError(f"--as-of {args.as_of} and --now {args.now} disagree; give one")
        now = env.as_of
    options = evaluate.Options(
        hidden_fraction=args.hidden_fraction,
        seed=args.seed,
        k=args.k,
        now=now,
        scratch_url=args.scratch_db,
        reset_scratch=args.reset_scratch,
        bootstrap=args.bootstrap,
        keep_scratch=args.keep_scratch,
    )
    try:
        result = evaluate.evaluate(
            env.engine, env.url, candidates, options, show_progress=env.show_progress
        )
    finally:
        env.engine.dispose()
    out = Path(args.out)
    evaluate.write_result(result, out)
    if args.json:
        cli.emit(args, "", result)
        return 0
    print(
        f"evaluated {len(candidates)} config(s) on {result['n_evaluated_pairs']} hidden pairs "
        f"({result['n_hidden_pairs']} of {result['n_decision_pairs']} decision pairs hidden, "
        f"seed {result['seed']}, k {result['k']}, signals at {result['now']})"
    )
    print(table(result))
    print(
        "(* = the config's own reciprocal setting, the one it would serve; v… = per viewer, "
        "over viewers with a positive and a negative)\n"
    )
    for entry in result["configs"]:
        print(entry["summary"])
    print(f"\nfull result with ROC points: {out}")
    return 0


def add_holdout_options(parser: argparse.ArgumentParser) -> None:
    """The held-out pairs and the metrics on them: ``evaluate``'s and ``tune``'s, alike."""
    from jobs.tools import evaluate

    parser.add_argument(
        "--hidden-fraction",
        type=fraction,
        default=0.2,
        metavar="F",
        help="share of decision pairs held out (hidden from the signal jobs; default 0.2)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the held-out pairs (default 0)"
    )
    parser.add_argument(
        "--k",
        type=data_cli.positive_int,
        default=evaluate.DEFAULT_K,
        metavar="K",
        help=f"cut-off of precision/recall/NDCG per viewer (default {evaluate.DEFAULT_K})",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=evaluate.DEFAULT_BOOTSTRAP,
        metavar="N",
        help="resamples for the 95%% intervals of AUC and of each lead over a baseline "
        f"(default {evaluate.DEFAULT_BOOTSTRAP}; 0 = none)",
    )


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1); got {text!r}") from exc
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1) (exclusive); got {text!r}")
    return value


def define_evaluate(parser: argparse.ArgumentParser) -> cli.Handler:

    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--candidate",
        action="append",
        metavar="FILE",
        help="a config YAML to compare (merged over the reference; repeatable; default: none)",
    )
    parser.add_argument(
        "--no-default",
        action="store_true",
        help="do not evaluate the reference config itself (default: evaluate it)",
    )
    add_holdout_options(parser)
    parser.add_argument(
        "--now",
        metavar="TIME",
        help="reference time of the signals, ISO 8601 UTC (default: the latest user activity); "
        "the same as --as-of",
    )
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        metavar="PATH",
        help=f"where to write the result JSON (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--scratch-db",
        metavar="URL",
        help="an existing empty database for the scratch copy, never dropped: how a role "
        "without CREATEDB evaluates (default: a temporary SQLite file, or a new database on "
        "the source's PostgreSQL server, dropped afterwards)",
    )
    parser.add_argument(
        "--reset-scratch",
        action="store_true",
        help="with --scratch-db: delete every row of its tables first (reuse it run after run; "
        "default: refuse a scratch database that is not empty)",
    )
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="keep the scratch database for inspection (its URL is logged; default: drop it)",
    )
    cli.add_json(parser, "the full result")
    return cmd_evaluate
