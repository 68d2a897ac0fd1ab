"""``matchjobs score-user ID``: one user's match scores, in-process (no Ray), under the ledger.

Runs the match job with scope ``users`` and trigger ``on_demand``: the user's list is
recomputed with the nightly's code and indexes, plus at most ``fanout.max_reverse`` users who
currently list them (``--no-reverse`` skips those).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from jobs import cli
from jobs.errors import ScopeError


def cmd_score_user(env: cli.Env) -> int:
    from jobs import config as config_mod
    from jobs.context import Scope
    from jobs.storage import serving

    args = env.args
    with env.reader().connect() as conn:
        if not serving.user_exists(conn, args.user_id):
            # Checked before the ledger: a run for nobody is not a success to record.
            raise ScopeError(f"user {args.user_id} does not exist; nothing to score")
    config = env.config
    if args.no_reverse:
        config = config_mod.from_mapping(
            {**config.model_dump(), "fanout": {**config.fanout.model_dump(), "max_reverse": 0}},
            source="--no-reverse",
        )
        env._config = config
    run_id, result = cli.run_job(env, "match", Scope.users(args.user_id), "on_demand")
    reverse = result.extra.get("reverse_user_ids", [])
    data: dict[str, Any] = {"run_id": run_id, **dataclasses.asdict(result)}
    cli.emit(
        args,
        f"match run {run_id}: user {args.user_id} and {len(reverse)} reverse users, "
        f"{result.rows_written} rows written ({config.algorithm_version})",
        data,
    )
    return 0


def define_score_user(parser: argparse.ArgumentParser) -> cli.Handler:
    parser.description = (
        "Recompute user ID's suggestions with the nightly's code, in this process, under the "
        "job_runs ledger; also up to fanout.max_reverse users whose lists hold ID."
    )
    parser.add_argument("user_id", type=int, metavar="ID", help="the user to recompute")
    parser.add_argument(
        "--no-reverse",
        action="store_true",
        help="do not recompute the users whose lists hold this user (default: recompute them)",
    )
    cli.add_json(parser, "the run's result")
    return cmd_score_user
