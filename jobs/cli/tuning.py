"""The ``matchjobs tune`` subcommand: fit the signal weights offline, write an experiment YAML.

Parses arguments, calls :func:`jobs.tools.tune.tune`, prints the fit and the held-out metrics
of the fitted config beside the base config and every baseline. No computation, no SQL.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from jobs import cli
from jobs.cli import data as data_cli
from jobs.cli import evaluation as evaluation_cli

DEFAULT_OUT = Path("configs") / "experiments" / "tuned.yaml"

DESCRIPTION = """\
Fit the weight of every registered signal (non-negative, L2-regularised logistic regression of
each viewer's like or pass on the pair's signal values) and choose reciprocal fusion (off,
harmonic, geometric or min) from the observed decisions, then write them as an experiment YAML
whose header says how it was made (the command, the database, the seeds and pair counts, the
fit's figures and the held-out metrics).

Nothing it is judged on was fitted on: the held-out pairs are the ones `matchjobs evaluate`
hides with the same --seed and --hidden-fraction. The visible pairs are dealt into --folds
folds; each fold's signals come from a scratch copy without that fold's pairs (a pair's own
decision never shapes its signals), and the pairs are split into fitted and validation pairs;
validation chooses the L2 strength (log-loss) and the reciprocal setting (mutual-match AUC).
Finally evaluate scores the held-out pairs with the fitted config, the base config and every
baseline. The source database is only read.

  matchjobs --db sqlite:///sd.db tune --out configs/experiments/speed-dating.yaml

For the spread over seeds, tune once per --seed: a file fitted with --seed S, evaluated on
another seed's hidden pairs, would be measured on pairs it was fitted on."""


def command_line(args: argparse.Namespace, url: str) -> str:
    """The command that reproduces this run, every option spelt out (password redacted)."""
    from jobs.storage import engine as engine_mod

    words = ["matchjobs", "--db", engine_mod.redact(url)]
    for path in cli.config_files(args.config):
        words += ["--config", path]
    words += ["tune", "--hidden-fraction", str(args.hidden_fraction), "--seed", str(args.seed)]
    words += ["--folds", str(args.folds)]
    if args.fit_seed is not None:
        words += ["--fit-seed", str(args.fit_seed)]
    words += ["--validation-fraction", str(args.validation_fraction)]
    words += ["--min-pairs", str(args.min_pairs), "--k", str(args.k)]
    words += ["--bootstrap", str(args.bootstrap)]
    if getattr(args, "as_of", None) is not None:
        words += ["--as-of", args.as_of]
    words += ["--algorithm-version", args.algorithm_version, "--out", args.out]
    if args.note:
        words += ["--note", args.note]
    return shlex.join(words)


def cmd_tune(env: cli.Env) -> int:
    from jobs.tools import tune

    args = env.args
    options = tune.Options(
        hidden_fraction=args.hidden_fraction,
        seed=args.seed,
        k=args.k,
        now=env.as_of,
        bootstrap=args.bootstrap,
        scratch_url=args.scratch_db,
        reset_scratch=args.reset_scratch,
        folds=args.folds,
        fit_seed=args.fit_seed,
        validation_fraction=args.validation_fraction,
        min_pairs=args.min_pairs,
        algorithm_version=args.algorithm_version,
    )
    try:
        outcome = tune.tune(
            env.engine,
            env.url,
            cli.config_files(args.config),
            Path(args.out),
            options,
            command=command_line(args, env.url),
            note=args.note,
        )
    finally:
        env.engine.dispose()
    fit, facts, result = outcome.fit, outcome.facts, outcome.evaluation
    weights = ", ".join(
        f"{key} {value:.3f}" for key, value in outcome.config.weights.model_dump().items()
    )
    print(
        f"fitted on {facts['n_train_rows']} decided rows of {facts['n_train_pairs']} pairs, "
        f"validated on {facts['n_validation_pairs']} pairs (none of the "
        f"{facts['n_hidden_pairs']} held-out pairs); L2 {fit.fit.l2:g}, reciprocal "
        f"{fit.fusion or 'off'}"
    )
    print(f"weights: {weights}")
    print(f"wrote {outcome.path}\n")
    print(
        f"held-out metrics on {result['n_evaluated_pairs']} pairs (seed {result['seed']}, "
        f"hidden fraction {result['hidden_fraction']}, k {result['k']}):"
    )
    print(evaluation_cli.table(result))
    print("\n" + "\n".join(tune.held_out_lines(result)) + "\n")
    for entry in result["configs"]:
        if entry["served"]:
            print(entry["summary"])
    return 0


def define_tune(parser: argparse.ArgumentParser) -> cli.Handler:
    from jobs.tools import tune

    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        metavar="PATH",
        help=f"the experiment YAML to write (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--algorithm-version",
        default=tune.DEFAULT_VERSION,
        metavar="NAME",
        help=f"algorithm_version written in the file (default {tune.DEFAULT_VERSION})",
    )
    evaluation_cli.add_holdout_options(parser)
    parser.add_argument(
        "--folds",
        type=data_cli.positive_int,
        default=tune.DEFAULT_FOLDS,
        metavar="K",
        help="cross-fitting folds: each fold's signals come from a copy without its pairs "
        f"(one signal-job run per fold; default {tune.DEFAULT_FOLDS})",
    )
    parser.add_argument(
        "--fit-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of the folds and of the fit/validation split (default: --seed + 1)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=evaluation_cli.fraction,
        default=0.5,
        metavar="F",
        help="share of the fit pairs kept for validation, never fitted on (default 0.5)",
    )
    parser.add_argument(
        "--min-pairs",
        type=data_cli.positive_int,
        default=tune.DEFAULT_MIN_PAIRS,
        metavar="N",
        help=f"fewest visible decision pairs to tune on (default {tune.DEFAULT_MIN_PAIRS})",
    )
    parser.add_argument(
        "--note", metavar="TEXT", help="a line for the file's header (default: none)"
    )
    parser.add_argument(
        "--scratch-db",
        metavar="URL",
        help="an existing database for the scratch copies (emptied between the fit and the "
        "held-out evaluation), as evaluate's --scratch-db (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--reset-scratch",
        action="store_true",
        help="with --scratch-db: delete every row of its tables first",
    )
    return cmd_tune
