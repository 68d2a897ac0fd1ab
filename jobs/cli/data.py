"""Data-loading subcommands: ``matchjobs seed`` and ``matchjobs import speed-dating``.

Both write the app-owned source tables (never derived ones) in one transaction, after
ensuring the schema, and refuse a database that already has users unless ``--replace``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from jobs import cli


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete every source row (users, quiz, interests, ratings, likes) first "
        "(default: refuse a database that has users)",
    )
    cli.add_json(parser, "the summary")


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (argparse names the option in its message)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a whole number ≥ 1; got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1; got {text!r}")
    return value


def cmd_seed(env: cli.Env) -> int:
    from jobs.tools import seed as seed_mod

    args = env.args
    now = cli.parse_now(args.now) if args.now else seed_mod.DEFAULT_NOW
    result = seed_mod.seed(
        env.engine,
        n_users=args.users,
        seed=args.seed,
        now=now,
        replace=args.replace,
        cities=args.cities,
        show_progress=env.show_progress,
    )
    total = sum(result.rows.values())
    seconds = result.generate_seconds + result.write_seconds
    summary = (
        f"seeded {result.n_users} users (seed {result.seed}, {result.cities} cities, "
        f"now {now.isoformat()}): "
        f"{total} rows in {seconds:.1f}s — "
        + ", ".join(f"{name} {rows}" for name, rows in result.rows.items())
    )
    cli.emit(args, summary, dataclasses.asdict(result))
    return 0


def cmd_import(env: cli.Env) -> int:
    from jobs.tools.importers import speed_dating

    args = env.args
    result = speed_dating.import_csv(env.engine, Path(args.path), replace=args.replace)
    skipped = sum(result.skipped.values())
    summary = (
        f"imported {args.path}: "
        + ", ".join(f"{name} {rows}" for name, rows in result.rows.items())
        + f"; skipped {skipped} values ("
        + ", ".join(f"{reason} {n}" for reason, n in sorted(result.skipped.items()))
        + ")"
    )
    cli.emit(args, summary, dataclasses.asdict(result))
    return 0


def define_seed(seed: argparse.ArgumentParser) -> cli.Handler:
    from jobs.tools import seed as seed_mod

    seed.description = (
        "Generate N users with quiz answers, interests, ratings and likes "
        "(same --users, --seed, --cities and --now give identical rows) and write them in one "
        "transaction."
    )
    seed.add_argument(
        "--users", type=positive_int, required=True, metavar="N", help="number of users (≥ 1)"
    )
    seed.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    seed.add_argument(
        "--cities",
        choices=seed_mod.CITY_LAYOUTS,
        default=seed_mod.DEFAULT_CITIES,
        help="where users live: realistic = 1,000 places with heavy-tailed sizes (the "
        "biggest ~8%%), dense = 20 big cities (the biggest ~24%%) (default "
        f"{seed_mod.DEFAULT_CITIES})",
    )
    seed.add_argument(
        "--now",
        metavar="TIME",
        help=f"reference time, ISO 8601 UTC (default {seed_mod.DEFAULT_NOW.isoformat()})",
    )
    _add_common(seed)
    return cmd_seed


def define_import(imp: argparse.ArgumentParser) -> cli.Handler:
    sources = imp.add_subparsers(dest="source", required=True, metavar="SOURCE")
    sd = sources.add_parser(
        "speed-dating",
        help="Fisman & Iyengar speed-dating experiment CSV",
        description="Import 'Speed Dating Data.csv' (participants → users, sign-up survey → "
        "quiz answers, activities → interests, scorecards → ratings, decisions → likes). "
        "Values that are missing or outside their scale are skipped and counted per reason.",
    )
    sd.add_argument("path", metavar="PATH", help="path to 'Speed Dating Data.csv'")
    _add_common(sd)
    cli.global_options(sd)
    return cmd_import
